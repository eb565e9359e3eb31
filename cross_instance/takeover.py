"""Takeover: the inbox of a dead replica is taken over by one live replica, under a lease.

The dead replica's ids are released first (it is fenced for good: its targets have ended), then
every entry is re-routed to its target's current owner (or held, dropped when its target ended,
or dead-lettered), acked in the dead inbox page by page, then the inbox is retired and the dead
replica forgotten. The lease (``takeover_lock_ttl_ms``) is renewed beside the work, not between
pages; when it is lost the work stops, and the next holder goes on from the entries not acked
yet. A draining replica hands
its own inbox over the same way (:meth:`Takeover.take_over` of its own token).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from cross_instance.claims import DeliveryClaims
from cross_instance.config import RuntimeConfig
from cross_instance.consumer import Consumer
from cross_instance.dead_letters import DeadLetters
from cross_instance.envelope import INTERNAL_KINDS, Trail
from cross_instance.errors import RuntimeFenced, RuntimeReply, fenced_unless
from cross_instance.inbox import Entry, InboxStream
from cross_instance.keys import CONSUMER_GROUP
from cross_instance.lifecycle import Lifecycle
from cross_instance.metrics import RuntimeMetrics
from cross_instance.ownership import Ownership
from cross_instance.routing import Router
from cross_instance.scripts import Scripts

__all__ = ["OnReleased", "Takeover"]

# (kind, ids): ids a dead replica owned, released by the takeover (they have no owner now)
OnReleased = Callable[[str, list[str]], Awaitable[None]]

log = logging.getLogger("lingua.runtime")


@dataclass
class _Lease:
    """How a takeover ended: retired the inbox, lost the lease (neither flag), or fenced."""

    finished: bool = False
    fenced: bool = False


class Takeover:
    def __init__(
        self,
        token: str,
        config: RuntimeConfig,
        lifecycle: Lifecycle,
        scripts: Scripts,
        inbox: InboxStream,
        claims: DeliveryClaims,
        ownership: Ownership,
        router: Router,
        consumer: Consumer,
        dead_letters: DeadLetters,
        metrics: RuntimeMetrics,
        on_released: OnReleased | None = None,
    ) -> None:
        self.token = token
        self.config = config
        self.lifecycle = lifecycle
        self.scripts = scripts
        self.inbox = inbox
        self.claims = claims
        self.ownership = ownership
        self.router = router
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.on_released = on_released

    async def run(self) -> None:
        """Look for dead inboxes every ``takeover_interval_ms`` until draining or fenced."""
        life = self.lifecycle
        while not life.draining and not life.fenced:
            await anyio.sleep(self.config.takeover_interval_ms / 1000)
            if life.draining or life.fenced:
                return
            try:
                _, data = await self.scripts.run("find_dead_inboxes", [""])
                for dead in data.get("dead") or []:
                    if dead != self.token and await self.take_over(dead):
                        self.metrics.takeovers.inc()
            except RuntimeFenced:
                continue  # the loop ends when we are fenced; a lost lease race is not that
            except Exception:
                log.exception("takeover failed", extra={"instance": self.token})

    async def _begin(self, dead: str) -> RuntimeReply:
        code, _ = await self.scripts.run(
            "begin_takeover", [dead, self.token, self.config.takeover_lock_ttl_ms, ""]
        )
        return code

    async def take_over(self, dead: str) -> bool:
        """Re-route every entry of ``dead``'s inbox, then retire it. False: someone else has it,
        its replica is alive after all, or our lease was lost on the way (the next holder goes
        on from the entries we had not acked)."""
        code = fenced_unless(await self._begin(dead), self.token)
        if code is not RuntimeReply.OK:
            return False
        own = dead == self.token
        if own:
            log.info("handing over our own inbox", extra={"instance": self.token})
        else:
            log.info("taking over inbox of %s", dead, extra={"instance": self.token})
            # Fenced for good from here on (its refresh is refused): what it owned has ended.
            # Released first, so its sessions' messages are dropped as ended, not held for the
            # grace (and its nodes' held until they reconnect elsewhere).
            released = await self.ownership.release_all_of(dead)
            await self._tell_released(released)
        lease = _Lease()
        async with anyio.create_task_group() as tg:
            # The lease is renewed beside the work, not between pages: one page may wait for
            # holds and handlers longer than the lease.
            tg.start_soon(self._keep_lease, dead, tg.cancel_scope)
            try:
                lease.finished = await self._take_entries(dead)
            except RuntimeFenced:
                lease.fenced = True
            finally:
                tg.cancel_scope.cancel()
        if lease.fenced:
            raise RuntimeFenced(self.token)
        if not lease.finished:
            return False
        if own:
            log.info("our own inbox handed over and retired", extra={"instance": self.token})
            return True
        await self.scripts.run("end_takeover", [dead, self.token])
        log.info("inbox of %s taken over and retired", dead, extra={"instance": self.token})
        return True

    async def _tell_released(self, released: dict[str, list[str]]) -> None:
        """The owner (say, of the nodes whose replica died) is told which ids it lost; its
        failure never stops the takeover."""
        if self.on_released is None:
            return
        for kind, idents in released.items():
            if not idents:
                continue
            try:
                await self.on_released(kind, idents)
            except Exception:
                log.exception("released ids not handled", extra={"instance": self.token})

    async def _keep_lease(self, dead: str, work: anyio.CancelScope) -> None:
        ttl_s = self.config.takeover_lock_ttl_ms / 1000
        renewed = time.monotonic()
        while True:
            await anyio.sleep(ttl_s / 3)
            try:
                code = await self._begin(dead)
            except Exception as exc:
                log.warning("renewing the takeover lease failed: %r", exc)
                if time.monotonic() - renewed < ttl_s:
                    continue
                code = RuntimeReply.BUSY  # it has lapsed by now
            if code is not RuntimeReply.OK:
                log.warning("takeover lease on %s lost: stopping", dead)
                work.cancel()
                return
            renewed = time.monotonic()

    async def _take_entries(self, dead: str) -> bool:
        """Page through ``dead``'s inbox until it is empty and retired; False when another
        holder fenced it."""
        stream = self.scripts.keys.inbox(dead)
        cursor = "0-0"
        while True:
            _, data = await self.scripts.run(
                "take_entries",
                [CONSUMER_GROUP, self.token, cursor, self.config.inbox_batch],
                token=dead,
            )
            entries = [Entry.from_script(item) for item in data.get("entries") or []]
            if not entries:
                code, _ = await self.scripts.run("retire_inbox", [self.token], token=dead)
                if code is RuntimeReply.OK:
                    return True
                if code is RuntimeReply.FENCED:
                    return False  # our lease lapsed and another holder continues
                cursor = "0-0"
                continue
            async with anyio.create_task_group() as tg:
                for entry in entries:
                    tg.start_soon(self._take_entry, dead, stream, entry)
            try:
                await self.inbox.ack([entry.id for entry in entries], dead)
            except RuntimeFenced:
                if dead == self.token:
                    raise
                return False  # our lease lapsed and another holder fenced the inbox: theirs now
            cursor = entries[-1].id

    async def _take_entry(self, dead: str, stream: str, entry: Entry) -> None:
        """Decide where one entry of a taken-over inbox goes; returns once it is there."""
        envelope = entry.envelope
        if envelope is None:
            trail = Trail(deliveries=entry.deliveries, stream=stream, entry_id=entry.id)
            await self.dead_letters.add(entry.unreadable(), "undecodable", trail, dead)
            return
        if envelope.kind in INTERNAL_KINDS:
            return  # a notice for a replica that is gone: nothing to tell
        if await self.claims.handled(envelope.message_id):
            self.metrics.duplicates.inc()  # handled before its replica died, just not acked
            return
        deliveries = entry.deliveries
        if dead == self.token and entry.id in self.consumer.unattempted:
            deliveries -= 1
        trail = entry.trail(stream, deliveries)
        if deliveries >= self.config.max_deliveries:
            await self.dead_letters.add(envelope, "max_deliveries", trail, dead)
            return
        await self.router.route_final(envelope, trail)
