"""SRE commands: ``ownership``, ``inbox``, ``dlq list|show|replay|purge``, ``drain``.

Each prints a table, or one JSON document with ``--json``; the logic lives in
``cross_instance.admin`` (these functions only parse, call and print). Exit codes: 0 ok, 1 the
command ran and found a problem (an entry missing, a replica not live, a purge not confirmed),
2 bad usage. Printed payloads and errors have control characters escaped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import anyio
import msgspec

from cross_instance import admin
from cross_instance.envelope import DeadReason
from cross_instance.redis_client import AnyRedis, connect
from scheduler.cli_core import _table
from scheduler.config import Config

__all__ = ["register"]


def _run(config: Config, action: Callable[[AnyRedis], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = connect(config.redis)
        try:
            return await action(client)
        finally:
            await client.aclose()

    return anyio.run(main)


def _escape(value: Any) -> str:
    text = str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _json(data: Any) -> None:
    sys.stdout.write(msgspec.json.encode(data).decode() + "\n")


def _ms(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f}s"


def _duration_ms(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``2h``, ``500ms`` -> milliseconds."""
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    for suffix in ("ms", "s", "m", "h", "d"):
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            return int(text[: -len(suffix)]) * units[suffix]
    if text.isdigit():
        return int(text) * 1000
    raise argparse.ArgumentTypeError(f"not a duration (e.g. 90s, 15m, 2h): {text!r}")


def _ownership(args: argparse.Namespace, config: Config) -> int:
    view = _run(
        config,
        lambda r: admin.ownership(
            r, config.runtime, config.redis.key_prefix, full=args.full, limit=args.limit
        ),
    )
    if args.json:
        _json(view)
        return 0
    rows = [
        (
            r["instance_id"],
            r["epoch"],
            "live" if r["live"] else "DEAD",
            "yes" if r["draining"] else "no",
            _ms(r["presence_age_ms"]),
            r["address"] or "-",
            r["owned_nodes"],
            r["owned_sessions"],
        )
        for r in view["replicas"]
    ]
    headers = ("INSTANCE", "EPOCH", "STATE", "DRAINING", "PRESENCE_AGE", "ADDRESS", "NODES",
               "SESSIONS")  # fmt: skip
    sys.stdout.write(_table(headers, rows))
    if args.full:
        for r in view["replicas"]:
            sys.stdout.write(f"\n{r['token']}\n")
            sys.stdout.write(f"  nodes:    {' '.join(map(_escape, r['nodes'])) or '-'}\n")
            sys.stdout.write(f"  sessions: {' '.join(map(_escape, r['sessions'])) or '-'}\n")
    for orphan in view["orphans"]:
        sys.stdout.write(
            f"ORPHAN {orphan['token']}: {orphan['nodes']} nodes, {orphan['sessions']} sessions "
            "owned by a replica that is not live (its takeover is due)\n"
        )
    return 0


def _inbox(args: argparse.Namespace, config: Config) -> int:
    stats = _run(config, lambda r: admin.inbox_stats(r, config.redis.key_prefix))
    if args.json:
        _json(stats)
        return 0
    rows = [
        (s["token"], s["state"], s["length"], s["pending"], _ms(s["oldest_pending_age_ms"]),
         "-" if s["lag"] is None else s["lag"])
        for s in stats
    ]  # fmt: skip
    sys.stdout.write(_table(("INBOX", "STATE", "LENGTH", "PENDING", "OLDEST_PENDING", "LAG"), rows))
    return 0


def _dlq_list(args: argparse.Namespace, config: Config) -> int:
    entries = _run(
        config,
        lambda r: admin.dlq_list(
            r,
            config.runtime,
            config.redis.key_prefix,
            reason=args.reason,
            target=args.target,
            older_than_ms=args.older_than,
            limit=args.limit,
        ),
    )
    if args.json:
        _json(entries)
        return 0
    rows = [
        (e["id"], e["message_id"], e["reason"], e["kind"], _escape(e["target"]), e["deliveries"],
         _ms(e["age_ms"]), _escape(e["last_error"])[:60] or "-")
        for e in entries
    ]  # fmt: skip
    headers = ("ID", "MESSAGE", "REASON", "KIND", "TARGET", "DELIVERIES", "AGE", "LAST_ERROR")
    sys.stdout.write(_table(headers, rows))
    return 0


def _dlq_show(args: argparse.Namespace, config: Config) -> int:
    entry = _run(config, lambda r: admin.dlq_show(r, config.redis.key_prefix, args.id))
    if entry is None:
        sys.stderr.write(f"lingua-scheduler: no DLQ entry {_escape(args.id)}\n")
        return 1
    if args.json:
        _json(entry)
        return 0
    envelope = entry.pop("envelope")
    for key, value in [*entry.items(), *(("envelope." + k, v) for k, v in envelope.items())]:
        sys.stdout.write(f"{key:<22} {_escape(value)}\n")
    return 0


def _progress(args: argparse.Namespace) -> Callable[[int, int], None] | None:
    if args.json:
        return None

    def show(done: int, total: int) -> None:
        if total > 1:
            sys.stderr.write(f"\r{done}/{total}")
            if done == total:
                sys.stderr.write("\n")

    return show


def _selection(args: argparse.Namespace) -> tuple[list[str], bool] | None:
    if bool(args.ids) == bool(args.all):
        sys.stderr.write("lingua-scheduler: name DLQ entry ids, or --all (not both)\n")
        return None
    return args.ids, args.all


def _dlq_replay(args: argparse.Namespace, config: Config) -> int:
    chosen = _selection(args)
    if chosen is None:
        return 2
    try:
        report = _run(
            config,
            lambda r: admin.dlq_replay(
                r, config.runtime, config.redis.key_prefix, ids=chosen[0], all_entries=chosen[1],
                to=args.to, dry_run=args.dry_run, progress=_progress(args),
            ),
        )  # fmt: skip
    except LookupError as exc:
        sys.stderr.write(f"lingua-scheduler: {exc}\n")
        return 1
    if args.json:
        _json(report)
    else:
        verb = "would replay" if args.dry_run else "replayed"
        for item in report["replayed"]:
            sys.stdout.write(f"{verb} {item['id']} ({item['message_id']}) -> {item['to']}\n")
        for item in report["skipped"]:
            sys.stdout.write(f"skipped {item['id']}: {item['reason']}\n")
        for ident in report["missing"]:
            sys.stdout.write(f"missing {_escape(ident)}\n")
        sys.stdout.write(
            f"{len(report['replayed'])} {verb}, {len(report['skipped'])} skipped, "
            f"{len(report['missing'])} missing\n"
        )
    return 1 if report["missing"] or report["skipped"] else 0


def _dlq_purge(args: argparse.Namespace, config: Config) -> int:
    chosen = _selection(args)
    if chosen is None:
        return 2
    if not args.dry_run and not args.yes:
        what = "ALL DLQ entries" if args.all else f"{len(args.ids)} DLQ entries"
        if not sys.stdin.isatty():
            sys.stderr.write(f"lingua-scheduler: refusing to purge {what} without --yes\n")
            return 1
        answer = input(f"purge {what} for good? type 'yes': ")
        if answer.strip() != "yes":
            sys.stderr.write("lingua-scheduler: not purged\n")
            return 1
    report = _run(
        config,
        lambda r: admin.dlq_purge(
            r, config.redis.key_prefix, ids=chosen[0], all_entries=chosen[1],
            dry_run=args.dry_run, progress=_progress(args),
        ),
    )  # fmt: skip
    if args.json:
        _json(report)
    else:
        verb = "would purge" if args.dry_run else "purged"
        sys.stdout.write(f"{len(report['purged'])} {verb}, {len(report['missing'])} missing\n")
    return 1 if report["missing"] else 0


def _drain(args: argparse.Namespace, config: Config) -> int:
    try:
        token = _run(
            config, lambda r: admin.request_drain(r, config.redis.key_prefix, args.instance)
        )
    except LookupError as exc:
        sys.stderr.write(f"lingua-scheduler: {exc}\n")
        return 1
    if args.json:
        _json({"requested": token})
    else:
        sys.stdout.write(
            f"drain requested for {token}: it drains on its next presence refresh "
            f"(within {config.runtime.presence_refresh_ms} ms) and exits within "
            f"{config.runtime.drain_grace_ms} ms\n"
        )
    return 0


def register(sub: Any) -> None:
    def add(parent: Any, name: str, help_text: str, func: Callable[..., int]) -> Any:
        parser = parent.add_parser(name, help=help_text)
        parser.add_argument("--json", action="store_true", help="one JSON document")
        parser.set_defaults(func=func)
        return parser

    owners = add(sub, "ownership", "replicas, what each owns, and orphans", _ownership)
    owners.add_argument("--full", action="store_true", help="list the ids, not just counts")
    owners.add_argument("--limit", type=int, default=None, help="most ids per list")
    add(sub, "inbox", "per replica inbox: length, pending, oldest pending age, lag", _inbox)

    dlq = sub.add_parser("dlq", help="the dead-letter queue: list, show, replay, purge")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = add(dlq_sub, "list", "DLQ entries, oldest first", _dlq_list)
    listing.add_argument(
        "--reason", choices=get_args(DeadReason), help="only this dead-letter reason"
    )
    listing.add_argument("--target", help="node:<id>, session:<id> or just the id")
    listing.add_argument("--older-than", type=_duration_ms, help="e.g. 90s, 15m, 2h")
    listing.add_argument("--limit", type=int, default=None, help="most entries")
    show = add(dlq_sub, "show", "one DLQ entry in full (by entry id or message id)", _dlq_show)
    show.add_argument("id")
    replay = add(dlq_sub, "replay", "send entries again to their target's owner", _dlq_replay)
    replay.add_argument("ids", nargs="*", metavar="ID")
    replay.add_argument("--all", action="store_true", help="every DLQ entry")
    replay.add_argument("--to", metavar="INSTANCE", help="to this live replica instead")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    purge = add(dlq_sub, "purge", "delete entries for good", _dlq_purge)
    purge.add_argument("ids", nargs="*", metavar="ID")
    purge.add_argument("--all", action="store_true", help="every DLQ entry")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--dry-run", action="store_true", help="show what would be purged")

    drain = add(sub, "drain", "ask a replica to drain and exit (like SIGTERM)", _drain)
    drain.add_argument("instance", metavar="INSTANCE")
