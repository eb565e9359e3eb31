"""Routing: where a message goes — the handler here, the owner's inbox, a hold, or the DLQ.

A send to a target we own runs the handler in process (a failure queues it in our own inbox for
a retry). Otherwise the target's current owner is resolved (:func:`next_step` decides): a live
owner gets it in its inbox; with none, the message is held (:mod:`cross_instance.holds`) and
re-checked every ``route_recheck_ms`` until an owner is live again or its grace ends (DLQ, reason
``no_owner``). Only a non-resumable message whose target is *known* to have ended (its owner
released it: :attr:`~cross_instance.ownership.Target.ended`) is dropped (counted): an owner that
merely looks not live (a Redis stall past the presence TTL, a replica about to be taken over) is
waited for like any other. A full inbox dead-letters (``inbox_full``). Messages that came out of
an inbox are checked against their delivery claim before a handler runs here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
from anyio.abc import TaskGroup

from cross_instance.claims import DeliveryClaims
from cross_instance.clock import now_ms
from cross_instance.config import RuntimeConfig
from cross_instance.dead_letters import DeadLetters, Doomed
from cross_instance.envelope import (
    INTERNAL_KINDS,
    Envelope,
    LostReason,
    Route,
    SendResult,
    TargetKind,
    Trail,
    new_message_id,
)
from cross_instance.errors import RuntimeReply
from cross_instance.holds import Held, Holds
from cross_instance.ids import check_id
from cross_instance.inbox import InboxStream
from cross_instance.lifecycle import Lifecycle
from cross_instance.metrics import RuntimeMetrics
from cross_instance.ownership import Ownership, Target

__all__ = ["Obsolete", "Router", "Step", "next_step"]

log = logging.getLogger("lingua.runtime")

# here: the handler in process; inbox: the live owner's inbox; drop: the target ended (counted);
# hold: wait for a live owner within the grace, then the DLQ.
Step = Literal["here", "inbox", "drop", "hold"]

# Asked when a held message's grace ends without a live owner: True when nothing needs it any
# more (say, a job_assign whose job moved to another node), so it is dropped, not dead-lettered.
Obsolete = Callable[[Envelope], Awaitable[bool]]


def next_step(target: Target, resumable: bool, token: str, draining: bool) -> Step:
    """Where a message for ``target`` goes now (``token``: ours).

    Ours while draining means a claim that raced the drain's release: wait for the next owner.
    A non-resumable message is dropped only when its target ended (released by its owner); an
    owner that is not live, or an id with no record at all, may still be waiting to be
    refreshed or taken over, so the message is held and, failing that, dead-lettered.
    """
    if target.live:
        if target.owner != token:
            return "inbox"
        return "hold" if draining else "here"
    if target.ended and not resumable:
        return "drop"
    return "hold"


class Router:
    def __init__(
        self,
        token: str,
        config: RuntimeConfig,
        lifecycle: Lifecycle,
        ownership: Ownership,
        claims: DeliveryClaims,
        inbox: InboxStream,
        dead_letters: DeadLetters,
        holds: Holds,
        metrics: RuntimeMetrics,
        obsolete: Obsolete | None = None,
    ) -> None:
        self.token = token
        self.obsolete = obsolete
        self.config = config
        self.lifecycle = lifecycle
        self.ownership = ownership
        self.claims = claims
        self.inbox = inbox
        self.dead_letters = dead_letters
        self.holds = holds
        self.metrics = metrics

    async def send(
        self,
        target_kind: TargetKind,
        target_id: str,
        kind: str,
        payload: str,
        trace_id: str,
        resumable: bool,
        began_ms: int = 0,
        tc: str = "",
    ) -> SendResult:
        check_id(f"{target_kind} id", target_id)
        if not kind or kind in INTERNAL_KINDS:
            raise ValueError(f"message kind must be non-empty and not internal: {kind!r}")
        if not isinstance(payload, str):
            raise ValueError("payload must be a str")
        _ = self.inbox.scripts.redis  # raises when the runtime is not running
        envelope = Envelope(
            message_id=new_message_id(),
            kind=kind,
            target_kind=target_kind,
            target_id=target_id,
            payload=payload,
            trace_id=trace_id,
            created_ms=now_ms(),
            origin=self.token,
            resumable=resumable,
            began_ms=began_ms,
            tc=tc,
        )
        if self.ownership.owns(target_kind, target_id):
            return await self.deliver_local(envelope, Trail())
        routed = await self.route(envelope, Trail())
        return routed.as_send() if isinstance(routed, Held) else routed

    def gone_from_here(self, envelope: Envelope) -> bool:
        """A non-resumable target we no longer own (we released it, a newer claim took it, or
        we are fenced): a retry here of a handler that failed cannot deliver it."""
        return not envelope.resumable and not self.ownership.owns(
            envelope.target_kind, envelope.target_id
        )

    def drop_ended(self, envelope: Envelope, owner: str) -> SendResult:
        """The target's owner released it: nobody can ever take the message (counted)."""
        self.metrics.dropped.labels("ended").inc()
        log.debug("target %s ended: message dropped", envelope.target_id)
        return SendResult(route="dropped", message_id=envelope.message_id, owner=owner)

    async def deliver_local(
        self, envelope: Envelope, trail: Trail, *, seen: bool = False, timed: bool = False
    ) -> SendResult:
        """The owner is us: call the handler in process; a failure queues it in our own inbox.

        ``seen``: the message came out of an inbox (re-route, takeover, hold of an entry), so
        an earlier copy may have been handled: check and write the dedup mark, as the inbox does.
        """
        claim = ""
        if seen:
            state, claim = await self.claims.begin(envelope.message_id)
            if state == "done":
                self.metrics.duplicates.inc()
                return SendResult(route="local", message_id=envelope.message_id, owner=self.token)
            if state == "busy":
                # Another copy is in a handler now: queue this one; its retry finds the outcome.
                return await self.queue_here(envelope, trail)
        try:
            await self.claims.run(envelope, claim, timed)
        except Exception as exc:
            if claim:
                await self.claims.release(envelope.message_id, claim)
            if self.gone_from_here(envelope):
                self.metrics.dropped.labels("not_owned_here").inc()
                return SendResult(route="dropped", message_id=envelope.message_id)
            log.debug("local delivery failed, queued for retry: %r", exc)
            return await self.queue_here(envelope, trail.failed(exc))
        if claim:
            await self.claims.mark_done(envelope.message_id, claim)
        self.metrics.delivered_local.inc()
        return SendResult(route="local", message_id=envelope.message_id, owner=self.token)

    async def queue_here(self, envelope: Envelope, trail: Trail) -> SendResult:
        """Queue in our own inbox for a retry (reclaim); the DLQ when the inbox is gone."""
        trail = Trail(deliveries=trail.deliveries, failure=trail.failure)  # a new entry
        queued = await self.to_inbox(self.token, envelope, trail)
        if queued is not None:
            return queued
        # Our inbox is gone: another replica took it over, we are leaving.
        return await self.dead_letters.add(envelope, "no_owner", trail, self.token)

    async def to_inbox(self, token: str, envelope: Envelope, trail: Trail) -> SendResult | None:
        """Queue for ``token``'s replica; a full inbox dead-letters (reason inbox_full). None:
        the inbox is retired (its replica is gone), the caller re-resolves the owner."""
        code, entry = await self.inbox.append(token, envelope, trail)
        if code is RuntimeReply.UNKNOWN_INBOX:
            return None
        if code is RuntimeReply.FULL:
            return await self.dead_letters.add(envelope, "inbox_full", trail, token)
        route: Route = "local" if token == self.token else "remote"
        return SendResult(route=route, message_id=envelope.message_id, owner=token, entry_id=entry)

    async def route(self, envelope: Envelope, trail: Trail) -> SendResult | Held:
        """Deliver to the target's current live owner, drop it when the target ended, or hold
        the message for the grace."""
        target = await self.ownership.resolve(envelope.target_kind, envelope.target_id)
        step = next_step(target, envelope.resumable, self.token, self.lifecycle.draining)
        if step == "here":
            return await self.deliver_local(envelope, trail, seen=bool(trail.stream))
        if step == "inbox":
            sent = await self.to_inbox(target.owner, envelope, trail)
            if sent is not None:
                return sent
            # The owner's inbox is retired: it is being forgotten; wait for the next owner.
        elif step == "drop":
            return self.drop_ended(envelope, target.owner)
        admitted = self.holds.admit(envelope, trail, target.owner)
        if isinstance(admitted, Held):
            return admitted
        return await self.dead_letters.add(envelope, admitted, trail, target.owner)

    async def route_final(self, envelope: Envelope, trail: Trail) -> SendResult:
        """Route and, when held, wait for the final outcome (delivered or dead-lettered)."""
        routed = await self.route(envelope, trail)
        if isinstance(routed, Held):
            try:
                await routed.done.wait()
            finally:
                if not routed.done.is_set():
                    # Cancelled (the takeover lost its lease): the entry stays in its inbox
                    # for the next holder, so this copy must not be delivered as well.
                    self.holds.forget(routed)
            assert routed.result is not None
            return routed.result
        return routed

    # -- held messages ---------------------------------------------------------------------

    async def recheck_held(self, tg: TaskGroup) -> None:
        """Re-check held messages every ``route_recheck_ms`` (runs until cancelled)."""
        holds = self.holds
        while True:
            await holds.wait_for_any()
            await anyio.sleep(self.config.route_recheck_ms / 1000)
            for held in list(holds.held):
                # Each on its own task: a slow handler of one cannot hold the others past
                # their deadline.
                if not held.checking:
                    held.checking = True
                    tg.start_soon(self._recheck_logged, held)
            self.metrics.held.set(len(holds))

    async def _recheck_logged(self, held: Held) -> None:
        try:
            await self._recheck(held)
        except Exception:
            log.exception("re-checking a held message failed")
        finally:
            held.checking = False

    async def _recheck(self, held: Held) -> None:
        holds = self.holds
        if not holds.holds(held):
            return  # settled or given up (its takeover page was cancelled) since it was queued
        env, trail = held.envelope, held.trail
        result: SendResult | None = None
        async with holds.slots:
            target = await self.ownership.resolve(env.target_kind, env.target_id)
        held.last_owner = target.owner or held.last_owner
        step = next_step(target, env.resumable, self.token, self.lifecycle.draining)
        if step == "here":
            # Nobody waits on a held send's handler: it is timed like an inbox entry's.
            result = await self.deliver_local(env, trail, seen=bool(trail.stream), timed=True)
        elif step == "inbox":
            async with holds.slots:
                result = await self.to_inbox(target.owner, env, trail)
        elif step == "drop":
            result = self.drop_ended(env, held.last_owner)
        if result is None and holds.expired(held):
            if await self._is_obsolete(env):
                result = self.drop_obsolete(env, held.last_owner)
            else:
                async with holds.slots:
                    result = await self.dead_letters.add(env, "no_owner", trail, held.last_owner)
        if result is not None:
            holds.forget(held)
            held.result = result
            held.done.set()

    async def _is_obsolete(self, envelope: Envelope) -> bool:
        """The sender's hook (see :data:`Obsolete`); a failing hook keeps the message (DLQ)."""
        if self.obsolete is None:
            return False
        try:
            return await self.obsolete(envelope)
        except Exception:
            log.exception("asking whether a held message is still needed failed")
            return False

    def drop_obsolete(self, envelope: Envelope, owner: str) -> SendResult:
        """Held past the grace, and nothing needs it any more (counted)."""
        self.metrics.dropped.labels("obsolete").inc()
        log.info(
            "held %s for %s %s no longer needed: dropped, not dead-lettered",
            envelope.kind,
            envelope.target_kind,
            envelope.target_id,
            extra={"message_id": envelope.message_id, "trace_id": envelope.trace_id},
        )
        return SendResult(route="dropped", message_id=envelope.message_id, owner=owner)

    async def abandon_held(self) -> None:
        """Leaving with messages still held (the drain ran out of grace): a send's message goes
        to the DLQ now rather than vanish; an inbox entry's stays in its inbox for the taker.

        Sends go in batches of ``inbox_batch``, one round trip each, every write bounded and
        retried (:meth:`DeadLetters.add_batch`): thousands of them fit in the exit even on a
        slow Redis. A batch the DLQ does not take means it is unreachable: that batch and the
        rest are lost, each batch logged as an error and counted (``lingua_runtime_lost_total``).
        """
        taken = self.holds.take_all()
        sends = [held for held in taken if not held.trail.stream]
        size = self.config.inbox_batch
        reachable = True
        for start in range(0, len(sends), size):
            batch = sends[start : start + size]
            results = None
            if reachable:
                results = await self.dead_letters.add_batch(
                    [Doomed(h.envelope, "no_owner", h.trail, h.last_owner) for h in batch]
                )
            if results is None:
                reachable = False
                self._lost(batch, "dlq_unreachable")
                continue
            for held, result in zip(batch, results, strict=True):
                held.result = result
        for held in taken:
            held.done.set()

    def _lost(self, batch: list[Held], reason: LostReason) -> None:
        self.metrics.lost.labels(reason).inc(len(batch))
        log.error(
            "%d held sends lost on exit (%s): the DLQ did not take them; first message id %s",
            len(batch),
            reason,
            batch[0].envelope.message_id,
            extra={"count": len(batch), "reason": reason},
        )
