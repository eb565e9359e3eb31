"""The dead-letter queue: moving a message in (once per message id), reading, removing.

A message goes to the DLQ with the :class:`~cross_instance.envelope.Trail` it gathered and the
reason it stopped (:data:`~cross_instance.envelope.DeadReason`); the entry is a
:class:`~cross_instance.envelope.DeadLetter`. The runtime moves messages in
(:class:`DeadLetters`); the operator views (``admin``) page, find and remove them here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple, cast

import anyio
import msgspec

from cross_instance.clock import now_ms
from cross_instance.config import RedisConfig, RuntimeConfig
from cross_instance.envelope import DeadLetter, DeadReason, Envelope, SendResult, Trail
from cross_instance.errors import RuntimeReply
from cross_instance.keys import RuntimeKeys
from cross_instance.metrics import RuntimeMetrics
from cross_instance.redis_client import AnyRedis
from cross_instance.scripts import ScriptData, Scripts, call_script

__all__ = ["DeadLetters", "Doomed", "dlq_find", "dlq_pages", "dlq_remove"]

log = logging.getLogger("lingua.runtime")
_STREAM_ID = re.compile(r"^\d+-\d+$")
_Entries = list[tuple[str, dict[str, str]]]  # XRANGE on a client that decodes responses


class Doomed(NamedTuple):
    """A message on its way to the DLQ: why, its history, and the owner token it concerns."""

    envelope: Envelope
    reason: DeadReason
    trail: Trail
    owner: str


class DeadLetters:
    """Moves messages into the DLQ, stamped with our token."""

    def __init__(
        self,
        token: str,
        config: RuntimeConfig,
        redis_config: RedisConfig,
        scripts: Scripts,
        metrics: RuntimeMetrics,
    ) -> None:
        self.token = token
        self.config = config
        self.redis_config = redis_config
        self.scripts = scripts
        self.metrics = metrics

    async def add(
        self, envelope: Envelope, reason: DeadReason, trail: Trail, owner: str
    ) -> SendResult:
        """Dead-letter ``envelope``; ``owner`` is the token whose inbox held it, or the owner
        it could not reach. A message already in the DLQ is not added twice."""
        doomed = Doomed(envelope, reason, trail, owner)
        code, data = await self.scripts.run("dead_letter", self._args(doomed))
        return self._added(doomed, code, data)

    async def add_batch(self, batch: Sequence[Doomed]) -> list[SendResult] | None:
        """Dead-letter ``batch`` in one round trip, as :meth:`add` does each message. An attempt
        that fails or outlasts ``redis.command_timeout_ms`` is retried, up to
        ``redis.retry_attempts`` times; None when the DLQ took none of them by then (logged).
        Repeating is safe: a message already in the DLQ is not added twice."""
        config = self.redis_config
        backoff = config.retry_backoff_base_ms / 1000
        args = [self._args(doomed) for doomed in batch]
        for attempt in range(1, config.retry_attempts + 2):
            try:
                with anyio.fail_after(config.command_timeout_ms / 1000):
                    replies = await self.scripts.run_pipelined("dead_letter", args)
            except Exception as exc:
                log.warning(
                    "dead-lettering %d messages failed (attempt %d of %d): %r",
                    len(batch),
                    attempt,
                    config.retry_attempts + 1,
                    exc,
                )
                if attempt <= config.retry_attempts:
                    await anyio.sleep(backoff)
                    backoff = min(2 * backoff, config.retry_backoff_cap_ms / 1000)
                continue
            return [
                self._added(doomed, code, data)
                for doomed, (code, data) in zip(batch, replies, strict=True)
            ]
        return None

    def _args(self, doomed: Doomed) -> list[str | int]:
        """The ``dead_letter`` script's arguments for ``doomed``."""
        envelope, trail = doomed.envelope, doomed.trail
        failure = trail.failure
        dead = DeadLetter(
            envelope=envelope,
            reason=doomed.reason,
            stream=trail.stream,
            entry_id=trail.entry_id,
            owner=doomed.owner,
            deliveries=trail.deliveries,
            last_error=failure.error if failure else "",
            first_failure_ms=failure.first_ms if failure else 0,
            last_failure_ms=failure.last_ms if failure else 0,
            dead_lettered_ms=now_ms(),
            dead_lettered_by=self.token,
        )
        return [
            envelope.message_id,
            msgspec.json.encode(dead).decode(),
            self.config.dlq_maxlen,
            self.config.inbox_batch,
        ]

    def _added(self, doomed: Doomed, code: RuntimeReply, data: ScriptData) -> SendResult:
        envelope = doomed.envelope
        if code is RuntimeReply.OK:
            self.metrics.dead_lettered.labels(doomed.reason).inc()
            log.warning(
                "dead-lettered (%s) %s for %s %s",
                doomed.reason,
                envelope.kind,
                envelope.target_kind,
                envelope.target_id,
                extra={"message_id": envelope.message_id, "trace_id": envelope.trace_id},
            )
        return SendResult(
            route="dead_letter",
            message_id=envelope.message_id,
            owner=doomed.owner,
            entry_id=data["id"],
        )


async def dlq_pages(
    redis: AnyRedis, keys: RuntimeKeys, page: int = 500
) -> AsyncIterator[tuple[str, DeadLetter | None]]:
    """Every DLQ entry, oldest first (None: an entry that does not decode)."""
    start = "-"
    while True:
        batch = cast(_Entries, await redis.xrange(keys.dlq(), start, "+", count=page))
        for entry_id, fields in batch:
            try:
                yield entry_id, msgspec.json.decode(fields["dead"], type=DeadLetter)
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                yield entry_id, None
        if len(batch) < page:
            return
        start = "(" + batch[-1][0]


async def dlq_find(redis: AnyRedis, keys: RuntimeKeys, ident: str) -> tuple[str, DeadLetter] | None:
    """One DLQ entry by DLQ entry id or by message id; None when absent."""
    if _STREAM_ID.match(ident):
        entry_id: str | None = ident
    else:
        entry_id = cast("str | None", await redis.hget(keys.dlq("dlq_index"), ident))
    if not entry_id:
        return None
    found = cast(_Entries, await redis.xrange(keys.dlq(), entry_id, entry_id))
    if not found:
        return None
    return found[0][0], msgspec.json.decode(found[0][1]["dead"], type=DeadLetter)


async def dlq_remove(redis: AnyRedis, keys: RuntimeKeys, entry_ids: Sequence[str]) -> int:
    """Delete DLQ entries (replayed or purged) with their index entries; how many went."""
    code, data = await call_script(redis, keys, "remove_dead", list(entry_ids))
    assert code is RuntimeReply.OK
    return int(data.get("removed", 0))
