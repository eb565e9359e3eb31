"""The inbox streams: append an envelope, decode an entry (once), record failures, ack.

An entry's fields are ``env`` (the :class:`Envelope` as json), ``prior`` (handler attempts
before it reached this inbox) and ``failure`` (its last failure, json). Every way an entry is
read (the reader, reclaim, a takeover) turns it into one :class:`Entry`, decoded here; an entry
whose envelope does not decode is kept as such (``envelope`` None) and dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from cross_instance.clock import now_ms
from cross_instance.config import RuntimeConfig
from cross_instance.envelope import Envelope, Failure, Trail, describe
from cross_instance.errors import RuntimeFenced, RuntimeReply
from cross_instance.keys import CONSUMER_GROUP, RuntimeKeys
from cross_instance.lifecycle import Lifecycle
from cross_instance.lua import ScriptTimer
from cross_instance.metrics import RuntimeMetrics
from cross_instance.redis_client import AnyRedis
from cross_instance.scripts import Scripts, call_script

__all__ = ["Entry", "InboxStream", "append_entry", "entry_fields"]

log = logging.getLogger("lingua.runtime")


async def append_entry(
    client: AnyRedis,
    keys: RuntimeKeys,
    token: str,
    fields: dict[str, str],
    maxlen: int,
    timer: ScriptTimer | None = None,
) -> tuple[RuntimeReply, str]:
    """Add an entry to ``token``'s inbox within ``maxlen`` entries: ``(OK, entry id)``,
    ``(FULL, "")`` when the inbox is full, ``(UNKNOWN_INBOX, "")`` when it was retired."""
    flat = [part for pair in fields.items() for part in pair]
    code, data = await call_script(
        client, keys, "append_entry", [maxlen, *flat], token=token, timer=timer
    )
    return code, str(data.get("id", ""))


def entry_fields(envelope: Envelope, trail: Trail | None = None) -> dict[str, str]:
    """The fields of an inbox entry carrying ``envelope`` with its ``trail``."""
    fields: dict[str, str] = {"env": msgspec.json.encode(envelope).decode()}
    if trail is not None and trail.deliveries:
        fields["prior"] = str(trail.deliveries)
    if trail is not None and trail.failure is not None:
        fields["failure"] = msgspec.json.encode(trail.failure).decode()
    return fields


def _lenient_failure(raw: str | None) -> Failure | None:
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=Failure)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass
class Entry:
    """One inbox entry as read: its envelope decoded once (None: it does not decode)."""

    id: str
    fields: dict[str, str]
    deliveries: int  # handler attempts, this one included when it is being delivered
    envelope: Envelope | None
    failure: Failure | None  # the last handler failure recorded for it

    @classmethod
    def read(
        cls, entry_id: str, fields: dict[str, str], deliveries: int, failure: str | None = None
    ) -> Entry:
        try:
            envelope: Envelope | None = msgspec.json.decode(fields["env"], type=Envelope)
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
            envelope = None
        return cls(
            id=entry_id,
            fields=fields,
            deliveries=deliveries,
            envelope=envelope,
            failure=_lenient_failure(failure or fields.get("failure")),
        )

    @classmethod
    def from_script(cls, item: dict[str, Any]) -> Entry:
        """An entry as ``reclaim_entries`` / ``take_entries`` reply it."""
        return cls.read(item["id"], item["fields"], int(item["deliveries"]), item.get("failure"))

    @classmethod
    def from_read(cls, entry_id: str, fields: dict[str, str]) -> Entry:
        """An entry fresh from XREADGROUP: this delivery is its first here."""
        return cls.read(entry_id, fields, 1 + int(fields.get("prior", 0) or 0))

    def unreadable(self) -> Envelope:
        """A stand-in envelope for an entry that does not decode (so it can be dead-lettered)."""
        return Envelope(
            message_id=f"undecodable-{self.id}",
            kind="undecodable",
            target_kind="node",
            target_id="",
            payload=msgspec.json.encode(self.fields).decode(),
            created_ms=now_ms(),
        )

    def trail(self, stream: str, deliveries: int | None = None) -> Trail:
        return Trail(
            deliveries=self.deliveries if deliveries is None else deliveries,
            failure=self.failure,
            stream=stream,
            entry_id=self.id,
        )


class InboxStream:
    """Appends to any replica's inbox; acks and failure records in ours (or one taken over)."""

    def __init__(
        self,
        token: str,
        keys: RuntimeKeys,
        config: RuntimeConfig,
        scripts: Scripts,
        lifecycle: Lifecycle,
        metrics: RuntimeMetrics,
    ) -> None:
        self.token = token
        self.keys = keys
        self.stream = keys.inbox(token)
        self.config = config
        self.scripts = scripts
        self.lifecycle = lifecycle
        self.metrics = metrics

    async def create(self) -> None:
        """Our stream and its consumer group: they exist before anyone can learn our token, so
        no entry is ever skipped."""
        try:
            await self.scripts.redis.xgroup_create(
                self.stream, CONSUMER_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def append(
        self, token: str, envelope: Envelope, trail: Trail | None = None
    ) -> tuple[RuntimeReply, str]:
        """Append to ``token``'s inbox: (OK, entry id), FULL, or UNKNOWN_INBOX (retired)."""
        code, entry = await append_entry(
            self.scripts.redis,
            self.keys,
            token,
            entry_fields(envelope, trail),
            self.config.inbox_maxlen,
            self.scripts.timer,
        )
        if code is RuntimeReply.OK and token != self.token:
            self.metrics.forwarded.inc()
        return code, entry

    async def ack(self, entry_ids: Sequence[str], token: str = "") -> None:
        """Ack (and delete) entries of our inbox, or of ``token``'s that we are taking over."""
        inbox_token = token or self.token
        code, _ = await self.scripts.run(
            "ack_entry", [CONSUMER_GROUP, self.token, *entry_ids], token=inbox_token
        )
        if code is RuntimeReply.FENCED:
            if inbox_token == self.token:
                self.lifecycle.fence("ack refused")
            raise RuntimeFenced(f"{self.token} may not ack in {inbox_token}'s inbox")

    async def record_failure(self, entry: Entry, exc: Exception) -> None:
        """The handler failed on ``entry``: its failure record is kept beside our inbox."""
        client = self.scripts.redis
        failures = self.keys.inbox(self.token, "failures")
        previous = await client.hget(failures, entry.id) or entry.fields.get("failure")
        now = now_ms()
        first = msgspec.json.decode(previous, type=Failure).first_ms if previous else now
        record = Failure(first_ms=first, last_ms=now, error=describe(exc))
        await client.hset(failures, entry.id, msgspec.json.encode(record).decode())
        log.info("handler failed, entry stays pending: %s", record.error)

    async def update_gauges(self) -> None:
        client = self.scripts.redis
        self.metrics.inbox_length.set(await client.xlen(self.stream))
        summary = await client.xpending(self.stream, CONSUMER_GROUP)
        oldest = summary.get("min") if summary else None
        age = max(0, now_ms() - int(str(oldest).split("-")[0])) / 1000 if oldest else 0.0
        self.metrics.oldest_pending_age.set(age)
