"""Holds: messages whose target has no live owner wait in memory up to ``route_grace_ms``.

At most ``route_hold_max`` are held at once; while draining, every hold ends by one deadline
(:meth:`Holds.cut_at`), however many are queued. Held messages are re-checked concurrently,
but with at most a quarter of the connection pool (:attr:`Holds.slots`): thousands of holds must
not starve sends, acks and claims. The re-check itself (where a held message goes) is routing's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio

from cross_instance.config import RedisConfig, RuntimeConfig
from cross_instance.envelope import DeadReason, Envelope, SendResult, Trail
from cross_instance.metrics import RuntimeMetrics

__all__ = ["Held", "Holds"]


@dataclass(eq=False)
class Held:
    """A message waiting for its target to get a live owner."""

    envelope: Envelope
    trail: Trail
    deadline: float  # monotonic seconds
    last_owner: str = ""
    checking: bool = False  # a re-check task runs for it
    done: anyio.Event = field(default_factory=anyio.Event)
    result: SendResult | None = None

    def as_send(self) -> SendResult:
        """What the sender learns now: its final result, or that it is held."""
        if self.result is not None:
            return self.result
        return SendResult(route="held", message_id=self.envelope.message_id, owner=self.last_owner)


class Holds:
    def __init__(
        self, config: RuntimeConfig, redis_config: RedisConfig, metrics: RuntimeMetrics
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.held: list[Held] = []
        self.wakeup = anyio.Event()
        # While draining, every hold ends by this time (monotonic s), however many are queued.
        self.cut = float("inf")
        self.slots = anyio.Semaphore(max(1, redis_config.max_connections // 4))

    def __len__(self) -> int:
        return len(self.held)

    def cut_at(self, deadline: float) -> None:
        self.cut = deadline

    def expired(self, held: Held) -> bool:
        return time.monotonic() >= min(held.deadline, self.cut)

    def admit(self, envelope: Envelope, trail: Trail, owner: str) -> Held | DeadReason:
        """Hold ``envelope``, or say why it goes to the DLQ instead."""
        deadline = min(time.monotonic() + self.config.route_grace_ms / 1000, self.cut)
        if deadline <= time.monotonic():
            return "no_owner"  # draining past its hold budget: the grace is spent
        if len(self.held) >= self.config.route_hold_max:
            return "hold_overflow"
        held = Held(envelope=envelope, trail=trail, deadline=deadline, last_owner=owner)
        self.held.append(held)
        self.metrics.held.set(len(self.held))
        self.wakeup.set()
        return held

    def holds(self, held: Held) -> bool:
        return held in self.held

    def forget(self, held: Held) -> None:
        if held in self.held:
            self.held.remove(held)
            self.metrics.held.set(len(self.held))

    def take_all(self) -> list[Held]:
        """Every held message, no longer held (no re-check runs for them from here on)."""
        taken, self.held = self.held, []
        self.metrics.held.set(0)
        return taken

    async def wait_for_any(self) -> None:
        """Until something is held."""
        while not self.held:
            await self.wakeup.wait()
            self.wakeup = anyio.Event()
