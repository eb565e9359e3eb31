"""Delivery claims: a message id is handled at most once within ``dedup_ttl_ms``.

Each delivery out of an inbox first claims the id in one step (``SET NX GET`` on its dedup key,
so two copies never run at once), runs the handler under the claim (timed: the claim's TTL
assumes the bound) and turns the claim into a done mark after a success, so a redelivery, a
re-route or a DLQ replay has no second effect. A claim whose holder died, or whose attempt was
cancelled, is stale and taken over at once (``swap_claim``). The one exception is written in
docs/architecture.md (Limits): a holder that stalls past its presence TTL mid-handler has its
claim taken over.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio

from cross_instance.config import RedisConfig, RuntimeConfig
from cross_instance.envelope import Envelope
from cross_instance.keys import RuntimeKeys
from cross_instance.presence import token_live
from cross_instance.scripts import Scripts

__all__ = ["ClaimState", "DeliveryClaims", "Handler", "is_claim"]

Handler = Callable[[Envelope], Awaitable[None]]
# claimed: the caller runs the handler; done: handled already; busy: another delivery runs now.
ClaimState = Literal["claimed", "done", "busy"]
_CLAIM = "claim:"  # dedup value while a delivery runs; a done mark is the handling token


def is_claim(mark: str) -> bool:
    """A dedup value that is a claim in progress, not a done mark."""
    return mark.startswith(_CLAIM)


class DeliveryClaims:
    def __init__(
        self,
        token: str,
        keys: RuntimeKeys,
        config: RuntimeConfig,
        redis_config: RedisConfig,
        scripts: Scripts,
        handler: Handler,
    ) -> None:
        self.token = token
        self.keys = keys
        self.config = config
        self.redis_config = redis_config
        self.scripts = scripts
        self.handler = handler
        # Our deliveries in progress (added before the claim is even sent): a claim of ours
        # that is not here belongs to an attempt that ended, and is stale.
        self.mine: set[str] = set()

    async def begin(self, message_id: str) -> tuple[ClaimState, str]:
        """Claim the handling of ``message_id`` in one step (SET NX GET), so two copies
        delivered at once cannot both run: ("claimed", claim value), ("done", "") when it was
        handled already, ("busy", "") while another delivery of it runs."""
        claim = f"{_CLAIM}{self.token}:{secrets.token_hex(4)}"
        # The claim outlives the handler's own timeout by one command round trip.
        ttl = self.config.handler_timeout_ms + self.redis_config.command_timeout_ms
        self.mine.add(claim)
        try:
            previous = await self.scripts.redis.set(
                self.keys.dedup(message_id), claim, nx=True, px=ttl, get=True
            )
        except BaseException:
            self.mine.discard(claim)
            raise
        if previous is None:
            return "claimed", claim
        self.mine.discard(claim)
        previous = str(previous)
        if not is_claim(previous):
            return "done", ""
        if await self._stale(previous):
            # Its holder died (or was cancelled) mid-handler: take the claim over now rather
            # than wait for it to expire.
            self.mine.add(claim)  # before it is visible, as above
            try:
                _, data = await self.scripts.run(
                    "swap_claim", [previous, claim, ttl], message_id=message_id
                )
            except BaseException:
                self.mine.discard(claim)
                raise
            if data.get("swapped"):
                return "claimed", claim
            self.mine.discard(claim)
        return "busy", ""

    async def _stale(self, claim: str) -> bool:
        holder = claim[len(_CLAIM) :].rpartition(":")[0]
        if holder == self.token:
            return claim not in self.mine  # an attempt of ours that was cancelled
        return not await token_live(self.scripts.redis, self.keys, holder)

    async def run(self, envelope: Envelope, claim: str = "", timed: bool = False) -> None:
        """Run the handler on ``envelope`` (under ``claim`` when given)."""
        if not claim and not timed:
            # A fresh send to a target we own: the sender itself waits on the handler, so no
            # timeout scope here (it costs ~12 us, three times the rest of the short circuit).
            await self.handler(envelope)
            return
        try:
            # A hung handler must not hold its claim, its entry (and the batch behind it)
            # forever: the claim's TTL assumes this bound.
            with anyio.fail_after(self.config.handler_timeout_ms / 1000):
                await self.handler(envelope)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Cancelled: our claim on this id is stale from now on, and may be taken over.
                self.mine.discard(claim)
            raise

    async def mark_done(self, message_id: str, claim: str) -> None:
        try:
            await self.scripts.redis.set(
                self.keys.dedup(message_id), self.token, px=self.config.dedup_ttl_ms
            )
        finally:
            self.mine.discard(claim)

    async def release(self, message_id: str, claim: str) -> None:
        """The handler failed: our claim goes, so a retry can claim at once."""
        self.mine.discard(claim)
        await self.scripts.run("swap_claim", [claim, "", 0], message_id=message_id)

    async def mark(self, message_id: str) -> str | None:
        """The dedup value of ``message_id``: a claim, a done mark, or None."""
        mark = await self.scripts.redis.get(self.keys.dedup(message_id))
        return None if mark is None else str(mark)

    async def handled(self, message_id: str) -> bool:
        """A delivery of ``message_id`` succeeded (a claim alone does not count: its handler
        may have died with its replica)."""
        mark = await self.mark(message_id)
        return mark is not None and not is_claim(mark)
