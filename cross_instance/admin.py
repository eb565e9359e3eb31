"""Operator views and actions on the runtime's Redis state (the CLI and /api/v1/cluster use them).

Reads never change anything. Actions are idempotent: replaying a DLQ entry sends the message
with its original id (a consumer that already handled it does nothing) and removes the entry
only after the send; purging a purged entry finds nothing. Times are the Redis server's clock.
No function here scans the keyspace: everything is found through the ``{rt}`` registries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from cross_instance.config import RuntimeConfig
from cross_instance.dead_letters import dlq_find, dlq_pages, dlq_remove
from cross_instance.envelope import DeadLetter
from cross_instance.errors import RuntimeReply
from cross_instance.inbox import append_entry, entry_fields
from cross_instance.keys import CONSUMER_GROUP, RuntimeKeys, split_token
from cross_instance.presence import live_token, server_ms
from cross_instance.scripts import call_script

__all__ = [
    "cluster_overview",
    "dlq_list",
    "dlq_purge",
    "dlq_replay",
    "dlq_show",
    "dlq_summary",
    "inbox_stats",
    "owners_of",
    "ownership",
    "request_drain",
]

Progress = Callable[[int, int], None]


async def _replicas(redis: Any, keys: RuntimeKeys, now: int) -> list[dict[str, Any]]:
    records = await redis.hgetall(keys.rt("presence"))
    alive = dict(await redis.zrange(keys.rt("alive"), 0, -1, withscores=True))
    counts = await redis.hgetall(keys.rt("owned_count"))
    out = []
    for instance, raw in sorted(records.items()):
        rec = msgspec.json.decode(raw)
        token = f"{instance}@{rec['epoch']}"
        until = int(alive.get(instance, 0))
        out.append(
            {
                "instance_id": instance,
                "epoch": rec["epoch"],
                "token": token,
                "address": rec.get("address", ""),
                "version": rec.get("version", ""),
                "started_ms": rec.get("started_ms", 0),
                "presence_age_ms": max(0, now - int(rec.get("refreshed_ms", 0))),
                "live": until > now,
                "draining": bool(rec.get("draining")),
                "owned_nodes": int(counts.get(f"node|{token}", 0)),
                "owned_sessions": int(counts.get(f"session|{token}", 0)),
            }
        )
    return out


async def _owned_ids(redis: Any, keys: RuntimeKeys, kind: str) -> dict[str, list[str]]:
    """owner token -> ids (HSCAN of one owner map: admin use only)."""
    by_owner: dict[str, list[str]] = {}
    async for ident, owner in redis.hscan_iter(keys.owners(kind), count=1000):
        by_owner.setdefault(owner, []).append(ident)
    for ids in by_owner.values():
        ids.sort()
    return by_owner


async def ownership(
    redis: Any,
    runtime_config: RuntimeConfig,
    key_prefix: str,
    *,
    full: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """Every replica with what it owns (counts; the ids too with ``full``), and orphans: owner
    entries naming a token that is not live (its replica died and nobody took over yet)."""
    keys = RuntimeKeys(key_prefix)
    now = await server_ms(redis)
    replicas = await _replicas(redis, keys, now)
    live = {r["token"] for r in replicas if r["live"]}
    counts = await redis.hgetall(keys.rt("owned_count"))
    orphans: dict[str, dict[str, Any]] = {}
    for field, count in counts.items():
        kind, _, token = field.partition("|")
        if token not in live:
            entry = orphans.setdefault(token, {"token": token, "nodes": 0, "sessions": 0})
            entry[f"{kind}s"] = int(count)
    if full:
        cap = limit or runtime_config.admin_list_limit
        ids = {kind: await _owned_ids(redis, keys, kind) for kind in ("node", "session")}
        for replica in replicas:
            for kind in ("node", "session"):
                replica[f"{kind}s"] = ids[kind].get(replica["token"], [])[:cap]
        for orphan in orphans.values():
            for kind in ("node", "session"):
                orphan[f"{kind}_ids"] = ids[kind].get(orphan["token"], [])[:cap]
    return {"now_ms": now, "replicas": replicas, "orphans": sorted(orphans.values(), key=str)}


async def inbox_stats(redis: Any, key_prefix: str) -> list[dict[str, Any]]:
    """Per registered inbox: length, pending, oldest pending age, consumer lag, state."""
    keys = RuntimeKeys(key_prefix)
    now = await server_ms(redis)
    out = []
    for token, state in sorted((await redis.hgetall(keys.rt("inboxes"))).items()):
        stream = keys.inbox(token)
        length = await redis.xlen(stream)
        pending, oldest_age, lag = 0, 0, None
        try:
            summary = await redis.xpending(stream, CONSUMER_GROUP)
            pending = int(summary.get("pending") or 0)
            if summary.get("min"):
                oldest_age = max(0, now - int(str(summary["min"]).split("-")[0]))
            for group in await redis.xinfo_groups(stream):
                if group.get("name") == CONSUMER_GROUP:
                    lag = group.get("lag")
        except Exception:  # the inbox was retired between the two reads
            pass
        out.append(
            {
                "token": token,
                "instance_id": split_token(token)[0],
                "state": state,
                "length": length,
                "pending": pending,
                "oldest_pending_age_ms": oldest_age,
                "lag": lag,
            }
        )
    return out


async def cluster_overview(
    redis: Any, runtime_config: RuntimeConfig, key_prefix: str
) -> dict[str, Any]:
    """JSON-able: replicas (presence age, draining, owned counts), orphans, inboxes, DLQ depth."""
    view = await ownership(redis, runtime_config, key_prefix)
    keys = RuntimeKeys(key_prefix)
    view["inboxes"] = await inbox_stats(redis, key_prefix)
    view["dlq"] = {"depth": await redis.xlen(keys.dlq())}
    return view


async def owners_of(redis: Any, key_prefix: str, kind: str, ids: list[str]) -> dict[str, str]:
    """id -> owner token, for the named ids only (one HMGET); ids nobody owns are left out."""
    if not ids:
        return {}
    tokens = await redis.hmget(RuntimeKeys(key_prefix).owners(kind), ids)
    return {ident: token for ident, token in zip(ids, tokens, strict=True) if token}


# -- DLQ -------------------------------------------------------------------------------------


async def dlq_summary(redis: Any, key_prefix: str, *, limit: int) -> dict[str, Any]:
    """Depth (all entries), oldest entry's age, and the oldest ``limit`` entries with their
    count by reason (``counted`` says how many the counts cover: reading every entry on each
    dashboard refresh would cost O(depth))."""
    keys = RuntimeKeys(key_prefix)
    now = await server_ms(redis)
    depth = int(await redis.xlen(keys.dlq()))
    entries: list[dict[str, Any]] = []
    by_reason: dict[str, int] = {}
    oldest_age: int | None = None
    async for entry_id, dead in dlq_pages(redis, keys, page=min(limit, 500)):
        if len(entries) >= limit:
            break
        if dead is None:
            continue
        view = _dead_view(entry_id, dead, now, full=False)
        oldest_age = view["age_ms"] if oldest_age is None else oldest_age
        by_reason[dead.reason] = by_reason.get(dead.reason, 0) + 1
        entries.append(view)
    return {
        "depth": depth,
        "oldest_age_ms": oldest_age,
        "by_reason": by_reason,
        "counted": len(entries),
        "entries": entries,
    }


def _dead_view(entry_id: str, dead: DeadLetter, now: int, *, full: bool) -> dict[str, Any]:
    env = dead.envelope
    view: dict[str, Any] = {
        "id": entry_id,
        "message_id": env.message_id,
        "reason": dead.reason,
        "kind": env.kind,
        "target": f"{env.target_kind}:{env.target_id}",
        "deliveries": dead.deliveries,
        "age_ms": max(0, now - dead.dead_lettered_ms),
        "last_error": dead.last_error,
        "trace_id": env.trace_id,
    }
    if full:
        view.update(msgspec.to_builtins(dead))
        view["id"] = entry_id
    return view


async def dlq_list(
    redis: Any,
    runtime_config: RuntimeConfig,
    key_prefix: str,
    *,
    reason: str | None = None,
    target: str | None = None,
    older_than_ms: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """DLQ entries, oldest first. ``target`` matches ``kind:id`` or just the id."""
    keys = RuntimeKeys(key_prefix)
    now = await server_ms(redis)
    cap = limit or runtime_config.admin_list_limit
    out: list[dict[str, Any]] = []
    async for entry_id, dead in dlq_pages(redis, keys):
        if dead is None:
            continue
        env = dead.envelope
        if reason and dead.reason != reason:
            continue
        if target and target not in (env.target_id, f"{env.target_kind}:{env.target_id}"):
            continue
        if older_than_ms is not None and now - dead.dead_lettered_ms < older_than_ms:
            continue
        out.append(_dead_view(entry_id, dead, now, full=False))
        if len(out) >= cap:
            break
    return out


async def dlq_show(redis: Any, key_prefix: str, ident: str) -> dict[str, Any] | None:
    """One DLQ entry in full, by DLQ entry id or by message id; None when absent."""
    keys = RuntimeKeys(key_prefix)
    found = await dlq_find(redis, keys, ident)
    if found is None:
        return None
    return _dead_view(found[0], found[1], await server_ms(redis), full=True)


async def _selected(
    redis: Any, keys: RuntimeKeys, ids: Iterable[str] | None, all_entries: bool
) -> tuple[list[tuple[str, DeadLetter]], list[str]]:
    if all_entries:
        return [(i, d) async for i, d in dlq_pages(redis, keys) if d is not None], []
    chosen, missing = [], []
    for ident in ids or []:
        found = await dlq_find(redis, keys, ident)
        if found is None:
            missing.append(ident)
        else:
            chosen.append(found)
    return chosen, missing


async def dlq_replay(
    redis: Any,
    runtime_config: RuntimeConfig,
    key_prefix: str,
    *,
    ids: Iterable[str] | None = None,
    all_entries: bool = False,
    to: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Send DLQ entries again, with their original message ids, to the target's current live
    owner (or to the live replica ``to``); each is removed from the DLQ once sent. Entries whose
    target has no live owner stay (``skipped``). ``ids`` are DLQ entry ids or message ids."""
    keys = RuntimeKeys(key_prefix)
    if not all_entries and not ids:
        raise ValueError("name DLQ entries to replay, or all of them")
    now = await server_ms(redis)
    forced = None
    if to is not None:
        forced = await live_token(redis, keys, to, now)
        if forced is None:
            raise LookupError(f"replica {to!r} is not live")
    chosen, missing = await _selected(redis, keys, ids, all_entries)
    report: dict[str, Any] = {"dry_run": dry_run, "replayed": [], "skipped": [], "missing": missing}
    for done, (entry_id, dead) in enumerate(chosen, 1):
        env = dead.envelope
        dest = forced
        if dest is None:
            _, data = await call_script(
                redis, keys, "resolve_owner", [env.target_id, ""], kind=env.target_kind
            )
            dest = data.get("owner") if data.get("live") else None
        if dest is None:
            report["skipped"].append({"id": entry_id, "reason": "no_owner"})
        elif dry_run:
            report["replayed"].append({"id": entry_id, "to": dest, "message_id": env.message_id})
        else:
            code, _ = await append_entry(
                redis,
                keys,
                dest,
                entry_fields(env),
                runtime_config.inbox_maxlen,
            )
            if code is RuntimeReply.UNKNOWN_INBOX:
                report["skipped"].append({"id": entry_id, "reason": "inbox_gone"})
            elif code is RuntimeReply.FULL:
                report["skipped"].append({"id": entry_id, "reason": "inbox_full"})
            else:
                await dlq_remove(redis, keys, [entry_id])
                report["replayed"].append(
                    {"id": entry_id, "to": dest, "message_id": env.message_id}
                )
        if progress is not None:
            progress(done, len(chosen))
    return report


async def dlq_purge(
    redis: Any,
    key_prefix: str,
    *,
    ids: Iterable[str] | None = None,
    all_entries: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Delete DLQ entries for good (by DLQ entry id or message id, or all of them)."""
    keys = RuntimeKeys(key_prefix)
    if not all_entries and not ids:
        raise ValueError("name DLQ entries to purge, or all of them")
    chosen, missing = await _selected(redis, keys, ids, all_entries)
    purged = [entry_id for entry_id, _ in chosen]
    if not dry_run:
        for start in range(0, len(purged), 500):
            await dlq_remove(redis, keys, purged[start : start + 500])
            if progress is not None:
                progress(min(start + 500, len(purged)), len(purged))
    return {"dry_run": dry_run, "purged": purged, "missing": missing}


async def request_drain(redis: Any, key_prefix: str, instance: str) -> str:
    """Ask the live replica ``instance`` to drain (it notices on its next presence refresh);
    returns its token. LookupError when it is not live."""
    keys = RuntimeKeys(key_prefix)
    token = await live_token(redis, keys, instance, await server_ms(redis))
    if token is None:
        raise LookupError(f"replica {instance!r} is not live")
    request = {"epoch": split_token(token)[1], "requested_ms": await server_ms(redis)}
    await redis.hset(keys.rt("drain_requests"), instance, msgspec.json.encode(request).decode())
    return token
