"""The consumer of our own inbox: the reader and the reclaim of stuck entries.

The reader runs ``XREADGROUP`` in batches on a dedicated blocking connection; the handler runs
under a delivery claim, and the entry is acked (and deleted) only when it succeeded: a failure
leaves it pending. Every ``reclaim_interval_ms`` our stuck entries go back to the handler (or to
the target's new owner, when it moved), following the XAUTOCLAIM cursor; beyond
``max_deliveries`` attempts an entry goes to the DLQ. Both stop when the lifecycle says
``stopping`` (a drain or a fence): what they did not attempt is handed over unattempted.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from redis.exceptions import ResponseError

from cross_instance.claims import DeliveryClaims, is_claim
from cross_instance.clock import now_ms
from cross_instance.config import RedisConfig, RuntimeConfig
from cross_instance.dead_letters import DeadLetters
from cross_instance.envelope import INTERNAL_KINDS, OWNERSHIP_LOST, Trail
from cross_instance.errors import RuntimeFenced, RuntimeReply
from cross_instance.inbox import Entry, InboxStream
from cross_instance.keys import CONSUMER_GROUP
from cross_instance.lifecycle import Lifecycle
from cross_instance.metrics import RuntimeMetrics
from cross_instance.ownership import Ownership
from cross_instance.redis_client import AnyRedis
from cross_instance.routing import Router
from cross_instance.scripts import Scripts

__all__ = ["Consumer"]

log = logging.getLogger("lingua.runtime")


class Consumer:
    def __init__(
        self,
        token: str,
        config: RuntimeConfig,
        redis_config: RedisConfig,
        lifecycle: Lifecycle,
        scripts: Scripts,
        inbox: InboxStream,
        claims: DeliveryClaims,
        ownership: Ownership,
        router: Router,
        dead_letters: DeadLetters,
        metrics: RuntimeMetrics,
    ) -> None:
        self.token = token
        self.config = config
        self.redis_config = redis_config
        self.lifecycle = lifecycle
        self.scripts = scripts
        self.inbox = inbox
        self.claims = claims
        self.ownership = ownership
        self.router = router
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.client: AnyRedis | None = None  # the blocking reader connection
        # Entries read and not finished yet: reclaim must not retry them.
        self.inflight: set[str] = set()
        # Read from our inbox but never given to the handler (drain stopped mid-batch): the
        # hand-over does not count that read as an attempt.
        self.unattempted: set[str] = set()
        self.reader_done = anyio.Event()
        self.reclaim_lock = anyio.Lock()
        self.reclaim_cursor = "0-0"

    # -- the reader --------------------------------------------------------------------------

    async def read(self) -> None:
        """Read and handle our inbox until stopping (or fenced)."""
        assert self.client is not None
        life = self.lifecycle
        try:
            while not life.stopping:
                try:
                    response: Any = await self.client.xreadgroup(
                        CONSUMER_GROUP,
                        self.token,
                        {self.inbox.stream: ">"},
                        count=self.config.inbox_batch,
                        block=self.config.inbox_block_ms,
                    )
                except Exception as exc:
                    if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                        # Only a takeover deletes our inbox (or Redis lost its data): fenced.
                        life.fence("inbox gone")
                        return
                    # Anything else (connection lost, LOADING, READONLY after a failover...):
                    # presence still says we read, so keep reading after a backoff.
                    self.metrics.inbox_read_failures.inc()
                    log.warning("inbox read failed: %r", exc, extra={"instance": self.token})
                    await anyio.sleep(self.redis_config.retry_backoff_cap_ms / 1000)
                    continue
                batch = [entry for _stream, entries in response or [] for entry in entries]
                # The whole batch is ours until handled: reclaim must not retry the entries
                # still waiting behind a slow handler.
                self.inflight.update(entry_id for entry_id, _ in batch)
                try:
                    for entry_id, fields in batch:
                        if life.stopping:
                            # Draining: the rest of the batch is handed over, not attempted.
                            self.unattempted.add(entry_id)
                            continue
                        try:
                            await self.handle(Entry.from_read(entry_id, fields))
                        except RuntimeFenced:
                            return
                        except Exception:
                            # The entry stays pending: reclaim retries it.
                            log.exception("inbox entry %s failed", entry_id)
                finally:
                    self.inflight.difference_update(entry_id for entry_id, _ in batch)
        finally:
            self.reader_done.set()

    async def handle(self, entry: Entry) -> None:
        """One delivery of one inbox entry: dedup check, handler, then mark + ack on success."""
        self.inflight.add(entry.id)
        try:
            envelope = entry.envelope
            if envelope is None:
                trail = Trail(
                    deliveries=entry.deliveries, stream=self.inbox.stream, entry_id=entry.id
                )
                await self.dead_letters.add(entry.unreadable(), "undecodable", trail, self.token)
                await self.inbox.ack([entry.id])
                return
            if envelope.kind == OWNERSHIP_LOST:
                await self.ownership.notice(envelope)
                await self.inbox.ack([entry.id])
                return
            state, claim = await self.claims.begin(envelope.message_id)
            if state == "done":
                self.metrics.duplicates.inc()
                await self.inbox.ack([entry.id])
                return
            if state == "busy":
                return  # another copy is in a handler now: stays pending, reclaim looks again
            try:
                await self.claims.run(envelope, claim)
            except Exception as exc:
                await self.claims.release(envelope.message_id, claim)
                if self.router.gone_from_here(envelope):
                    self.metrics.dropped.labels("not_owned_here").inc()
                    await self.inbox.ack([entry.id])
                    return
                await self.inbox.record_failure(entry, exc)
                return
            self.metrics.observe_hop(envelope.created_ms, now_ms())
            await self.claims.mark_done(envelope.message_id, claim)
            await self.inbox.ack([entry.id])
            self.metrics.delivered_remote.inc()
            if entry.deliveries > 1:
                self.metrics.redelivered.inc()
        finally:
            self.inflight.discard(entry.id)

    # -- reclaim -----------------------------------------------------------------------------

    async def reclaim(self) -> None:
        """Reclaim every ``reclaim_interval_ms`` until stopping (or fenced)."""
        life = self.lifecycle
        while not life.stopping:
            await anyio.sleep(self.config.reclaim_interval_ms / 1000)
            async with self.reclaim_lock:
                if life.stopping:
                    return
                try:
                    await self.reclaim_once()
                    await self.inbox.update_gauges()
                except RuntimeFenced:
                    return
                except Exception:
                    log.exception("reclaim failed", extra={"instance": self.token})

    async def reclaim_once(self) -> int:
        """One pass over our stuck entries (follows the cursor across pages); returns how many
        were retried or dead-lettered."""
        handled = 0
        life = self.lifecycle
        for _ in range(max(1, self.config.inbox_maxlen // self.config.inbox_batch)):
            code, data = await self.scripts.run(
                "reclaim_entries",
                [
                    CONSUMER_GROUP,
                    self.token,
                    self.config.reclaim_min_idle_ms,
                    self.reclaim_cursor,
                    self.config.inbox_batch,
                    self.config.max_deliveries,
                    *self.inflight,
                ],
                token=self.token,
            )
            if code is RuntimeReply.FENCED:
                life.fence("reclaim refused")
                raise RuntimeFenced(self.token)
            for item in data.get("dead") or []:
                handled += 1
                await self._dead_letter(Entry.from_script(item))
            for item in data.get("retry") or []:
                if life.stopping:  # draining: the hand-over takes the rest, unattempted
                    self.unattempted.add(item["id"])
                    continue
                handled += 1
                self.metrics.reclaimed.inc()
                await self._retry(Entry.from_script(item))
            self.reclaim_cursor = data["cursor"]
            if self.reclaim_cursor == "0-0" or life.stopping:
                break
        return handled

    async def _retry(self, entry: Entry) -> None:
        envelope = entry.envelope
        if envelope is not None and envelope.kind not in INTERNAL_KINDS:
            # Route by ownership now, not as it was at send time: the target may have moved.
            target = await self.ownership.resolve(envelope.target_kind, envelope.target_id)
            if target.live and target.owner != self.token:
                trail = entry.trail(self.inbox.stream, entry.deliveries - 1)
                sent = await self.router.to_inbox(target.owner, envelope, trail)
                if sent is not None:
                    await self.inbox.ack([entry.id])
                    return
        await self.handle(entry)

    async def _dead_letter(self, entry: Entry) -> None:
        """An entry past ``max_deliveries``: to the DLQ, unless a copy of it was handled (or
        runs now)."""
        envelope = entry.envelope or entry.unreadable()
        mark = await self.claims.mark(envelope.message_id)
        if mark is not None:  # a copy of it was handled, or runs now
            if not is_claim(mark):
                await self.inbox.ack([entry.id])
            return
        trail = entry.trail(self.inbox.stream)
        await self.dead_letters.add(envelope, "max_deliveries", trail, self.token)
        await self.inbox.ack([entry.id])
