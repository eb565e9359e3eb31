"""One WebSocket peer (a node or a client session) with a bounded outbound queue.

Handlers and the inbox consumer never await a slow socket: :meth:`Link.send` only enqueues, and
one writer task per socket drains the queue. A peer that lets ``server.send_queue_max`` messages
pile up is a slow consumer: it is closed (1008) rather than buffered without bound.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import anyio
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from cross_instance.clock import now_ms
from scheduler.limits import TokenBucket

__all__ = ["CLOSE_POLICY", "CLOSE_TRY_AGAIN_LATER", "GatewaySettings", "Link"]

log = logging.getLogger("lingua.link")

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True)
class GatewaySettings:
    """What both gateways need to know of the configuration."""

    shutdown_close_code: int  # server.shutdown_close_code: sockets closed while this replica leaves
    cleanup_timeout_s: float  # redis.command_timeout_ms: a socket's clean-up in Redis


class Link:
    def __init__(
        self,
        ws: ServerConnection,
        *,
        queue_max: int,
        kind: str,
        rate: TokenBucket | None = None,
    ) -> None:
        self.ws = ws
        self.rate = rate  # the peer's message rate (limits.*_messages_per_second)
        self.kind = kind
        self.queue_max = queue_max
        self.ident = ""
        self._queue: deque[bytes] = deque()
        self._wakeup = anyio.Event()
        self._closing: tuple[int, str] | None = None

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<Link {self.kind} {self.ident or '-'} {state} queued={len(self._queue)}>"

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def within_rate(self) -> bool:
        """The frame just received is within the peer's message rate."""
        return self.rate is None or self.rate.take(now_ms())

    def send(self, data: bytes) -> bool:
        """Queue one frame; False when the link is closing or the peer is too slow (then it closes)."""
        if self._closing is not None:
            return False
        if len(self._queue) >= self.queue_max:
            log.warning(
                "slow consumer: closing",
                extra={"remote": str(self.ws.remote_address), "reason": self.ident},
            )
            self.close(CLOSE_POLICY, "slow consumer")
            return False
        self._queue.append(data)
        self._wakeup.set()
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (idempotent)."""
        if self._closing is None:
            self._closing = (code, reason)
            self._wakeup.set()

    async def run_writer(self) -> None:
        """Drain the queue to the socket until closed; then send the close frame."""
        try:
            while True:
                while self._queue:
                    await self.ws.send(self._queue.popleft().decode())
                if self._closing is not None:
                    break
                self._wakeup = anyio.Event()
                if self._queue or self._closing is not None:
                    continue
                await self._wakeup.wait()
            code, reason = self._closing
            await self.ws.close(code, reason)
        except ConnectionClosed:
            pass
