"""The operator audit: who changed the state through the CLI or the API, and what.

Every state-changing operator action (``dlq replay``, ``dlq purge``, ``drain``, and the
dashboard's DLQ actions) appends one record to a capped Redis stream
``<prefix>:{ops}:audit`` (at most ``server.ops_audit_max_entries``, older ones trimmed) and writes
one log line on the ``lingua.ops`` logger. ``lingua-scheduler ops-log`` lists the records, newest
first. Dry runs change nothing and are not recorded. docs/security.md, "Operator surface".
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
from typing import Any

import msgspec
from redis.exceptions import RedisError

from cross_instance.redis_client import AnyRedis

__all__ = ["OpsRecord", "audit_key", "dlq_selection", "operator", "read_records", "record"]

log = logging.getLogger("lingua.ops")


class OpsRecord(msgspec.Struct, kw_only=True):
    action: str  # "dlq replay", "dlq purge", "drain"
    target: str  # what it acted on: "all entries", "ids a b", "replica r1"
    outcome: str  # what came of it, e.g. "2 replayed, 0 skipped, 0 missing"
    source: str  # "cli" or "api"
    user: str  # the OS user of the CLI ("admin token" for the API)
    host: str  # the host the CLI ran on (the replica's instance id for the API)
    reason: str = ""  # the operator's --reason
    sudo_user: str = ""  # $SUDO_USER when the CLI ran under sudo
    peer: str = ""  # the API client's address
    at_ms: int = 0  # when (the stream entry id's time); filled in on read


def audit_key(key_prefix: str) -> str:
    # Its own hash tag: one small stream, in a slot of its own on a Redis Cluster.
    return f"{key_prefix}:{{ops}}:audit"


def dlq_selection(all_entries: bool, ids: list[str]) -> str:
    """An audit record's target for a DLQ action."""
    return "all entries" if all_entries else f"{len(ids)} entries ({' '.join(ids)})"


def operator() -> tuple[str, str, str]:
    """The CLI's OS user, host and ``$SUDO_USER`` (empty when not under sudo)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        user = f"uid {os.getuid()}"
    return user, socket.gethostname(), os.environ.get("SUDO_USER", "")


async def record(redis: AnyRedis, key_prefix: str, max_entries: int, entry: OpsRecord) -> str:
    """Log ``entry`` and append it to the audit stream (trimmed to ``max_entries``); the
    stream entry id, or "" when Redis refused the append: the action is done (an operator told
    it failed would repeat a replay or a purge), and the log line above still records it."""
    fields = msgspec.to_builtins(entry)
    fields.pop("at_ms")
    by = entry.user + (f" (sudo from {entry.sudo_user})" if entry.sudo_user else "")
    log.info(
        "operator action: %s of %s by %s on %s%s: %s",
        entry.action,
        entry.target,
        by,
        entry.host,
        f" (reason: {entry.reason})" if entry.reason else "",
        entry.outcome,
        extra={"ops_" + k: v for k, v in fields.items() if v},
    )
    data = msgspec.json.encode(fields)
    client: Any = redis
    try:
        ident = await client.xadd(
            audit_key(key_prefix), {"record": data}, maxlen=max_entries, approximate=False
        )
    except RedisError as exc:
        log.error(
            "operator action done, but its audit record was not stored: %s",
            exc,
            extra={"ops_action": entry.action, "ops_target": entry.target},
        )
        return ""
    return ident.decode() if isinstance(ident, bytes) else str(ident)


async def read_records(redis: AnyRedis, key_prefix: str, limit: int) -> list[OpsRecord]:
    """The newest ``limit`` records, newest first."""
    client: Any = redis
    out = []
    for ident, fields in await client.xrevrange(audit_key(key_prefix), count=limit):
        raw = next((v for k, v in fields.items() if k in ("record", b"record")), b"{}")
        try:
            entry = msgspec.json.decode(raw, type=OpsRecord)
        except msgspec.DecodeError:
            entry = OpsRecord(action="?", target="?", outcome="unreadable record", source="?",
                              user="?", host="?")  # fmt: skip
        text = ident.decode() if isinstance(ident, bytes) else str(ident)
        entry.at_ms = int(text.split("-", 1)[0])
        out.append(entry)
    return out
