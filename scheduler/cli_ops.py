"""SRE commands: ``ownership``, ``inbox``, ``dlq list|show|replay|purge``, ``drain``, ``ops-log``.

Each prints a table, or one JSON document with ``--json``; the logic lives in
``cross_instance.admin`` (these functions only parse, call and print). Exit codes
(:class:`scheduler.cli_errors.ExitCode`): 0 ok; 1 the command ran and found a problem (orphans,
an entry missing or skipped, a replica not live, a confirmation declined); 2 bad usage. Printed
payloads and errors have control characters escaped.

The commands that change state (``dlq replay``, ``dlq purge``, ``drain``) ask for confirmation
on a terminal; without one they need ``--yes`` (else exit 2 before Redis is touched). Each one
done (not a dry run) is recorded with who ran it (OS user, host, ``--reason``) in the operator
audit stream (:mod:`scheduler.ops_audit`), which ``ops-log`` lists.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import anyio

from cross_instance import admin
from cross_instance.envelope import DeadReason
from cross_instance.redis_client import AnyRedis, connect
from scheduler.cli_args import add_json, add_limit, duration_ms
from scheduler.cli_errors import CliError, ExitCode
from scheduler.cli_format import ago, duration, escape, relative, table, timestamp, write_json
from scheduler.config import Config
from scheduler.logs import is_configured
from scheduler.ops_audit import OpsRecord, dlq_selection, operator, read_records, record

__all__ = ["register"]


def _run(config: Config, action: Callable[[AnyRedis], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = connect(config.redis)
        try:
            return await action(client)
        finally:
            await client.aclose()

    return anyio.run(main)


def _problem(message: str) -> int:
    sys.stderr.write(f"lingua-scheduler: {message}\n")
    return ExitCode.PROBLEM


def _confirm(args: argparse.Namespace, what: str) -> bool:
    """Whether the operator confirmed ``what`` (``--yes``, or ``yes`` typed on a terminal).
    Without a terminal and without ``--yes``: a usage error (exit 2), before Redis is touched."""
    if args.yes or getattr(args, "dry_run", False):
        return True
    if not sys.stdin.isatty():
        raise CliError(
            f"refusing to {what} without confirmation: pass --yes (no terminal to ask)",
            ExitCode.USAGE,
        )
    sys.stderr.write(f"{what}? type 'yes': ")
    sys.stderr.flush()
    return sys.stdin.readline().strip() == "yes"


def _selected(args: argparse.Namespace) -> str:
    return dlq_selection(args.all, args.ids)


async def _audit(
    redis: AnyRedis, config: Config, args: argparse.Namespace, action: str, target: str,
    outcome: str,
) -> None:  # fmt: skip
    """Record a done action (docs/security.md, "Operator surface"): a log line on stderr, a
    record in the audit stream."""
    ops_log = logging.getLogger("lingua.ops")
    if not is_configured() and not ops_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("lingua-scheduler: %(message)s"))
        ops_log.addHandler(handler)
        ops_log.setLevel(logging.INFO)
    user, host, sudo_user = operator()
    entry = OpsRecord(
        action=action, target=target, outcome=outcome, source="cli", user=user, host=host,
        reason=args.reason or "", sudo_user=sudo_user,
    )  # fmt: skip
    await record(redis, config.redis.key_prefix, config.server.ops_audit_max_entries, entry)


def _ownership(args: argparse.Namespace, config: Config) -> int:
    view = _run(
        config,
        lambda r: admin.ownership(
            r, config.runtime, config.redis.key_prefix, full=args.full, limit=args.limit
        ),
    )
    code = ExitCode.PROBLEM if view["orphans"] else ExitCode.OK
    if args.json:
        write_json(view)
        return code
    rows = [
        (
            escape(r["instance_id"]),
            r["epoch"],
            "live" if r["live"] else "DEAD",
            "yes" if r["draining"] else "no",
            timestamp(r["started_ms"]),
            ago(r["presence_age_ms"]),
            escape(r["address"]) or "-",
            r["owned_nodes"],
            r["owned_sessions"],
        )
        for r in view["replicas"]
    ]
    headers = ("INSTANCE", "EPOCH", "STATE", "DRAINING", "STARTED", "REFRESHED", "ADDRESS",
               "NODES", "SESSIONS")  # fmt: skip
    sys.stdout.write(table(headers, rows))
    if args.full:
        for r in view["replicas"]:
            sys.stdout.write(f"\n{escape(r['token'])}\n")
            sys.stdout.write(f"  nodes:    {' '.join(map(escape, r['nodes'])) or '-'}\n")
            sys.stdout.write(f"  sessions: {' '.join(map(escape, r['sessions'])) or '-'}\n")
    for orphan in view["orphans"]:
        sys.stdout.write(
            f"ORPHAN {escape(orphan['token'])}: {orphan['nodes']} nodes, {orphan['sessions']} "
            "sessions owned by a replica that is not live (its takeover is due)\n"
        )
    return code


def _inbox(args: argparse.Namespace, config: Config) -> int:
    stats = _run(config, lambda r: admin.inbox_stats(r, config.redis.key_prefix))
    if args.json:
        write_json(stats)
        return ExitCode.OK
    rows = [
        (escape(s["token"]), escape(s["state"]), s["length"], s["pending"],
         duration(s["oldest_pending_age_ms"]) if s["pending"] else "-",
         "-" if s["lag"] is None else s["lag"])
        for s in stats
    ]  # fmt: skip
    headers = ("INBOX", "STATE", "LENGTH", "PENDING", "OLDEST_PENDING", "LAG")
    sys.stdout.write(table(headers, rows))
    return ExitCode.OK


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
        write_json(entries)
        return ExitCode.OK
    rows = [
        (e["id"], escape(e["message_id"]), e["reason"], escape(e["kind"]), escape(e["target"]),
         e["deliveries"], ago(e["age_ms"]), escape(e["last_error"])[:60] or "-")
        for e in entries
    ]  # fmt: skip
    headers = ("ID", "MESSAGE", "REASON", "KIND", "TARGET", "DELIVERIES", "DEAD", "LAST_ERROR")
    sys.stdout.write(table(headers, rows))
    return ExitCode.OK


def _readable(key: str, value: Any, now_ms: int) -> str:
    if value == "" or value is None:
        return "-"
    if not key.endswith("_ms") or not isinstance(value, int) or isinstance(value, bool):
        return escape(value)
    if key.endswith("age_ms"):
        return duration(value)
    # Every other ``*_ms`` of an entry is a moment; 0 means it did not happen.
    return f"{timestamp(value)} ({relative(value, now_ms)})" if value else "-"


def _dlq_show(args: argparse.Namespace, config: Config) -> int:
    entry = _run(config, lambda r: admin.dlq_show(r, config.redis.key_prefix, args.id))
    if entry is None:
        return _problem(
            f"no DLQ entry {escape(args.id)} (neither an entry id nor a message id in the DLQ; "
            "'dlq list' shows what is there)"
        )
    if args.json:
        write_json(entry)
        return ExitCode.OK
    # The Redis server's clock, as the age was computed with it.
    dead_ms = entry.get("dead_lettered_ms", 0)
    now_ms = dead_ms + entry["age_ms"] if dead_ms else int(time.time() * 1000)
    envelope = entry.pop("envelope")
    for key, value in [*entry.items(), *(("envelope." + k, v) for k, v in envelope.items())]:
        sys.stdout.write(f"{key:<22} {_readable(key, value, now_ms)}\n")
    return ExitCode.OK


def _progress(args: argparse.Namespace) -> Callable[[int, int], None] | None:
    if args.json:
        return None

    def show(done: int, total: int) -> None:
        if total > 1:
            sys.stderr.write(f"\r{done}/{total}")
            if done == total:
                sys.stderr.write("\n")

    return show


def _check_selection(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if bool(args.ids) == bool(args.all):
        parser.error("name DLQ entry ids, or --all (not both)")


def _dlq_replay(args: argparse.Namespace, config: Config) -> int:
    if not _confirm(args, f"replay {_selected(args)} of the DLQ"):
        return _problem("not replayed")

    async def replay(r: AnyRedis) -> Any:
        report = await admin.dlq_replay(
            r, config.runtime, config.redis.key_prefix, ids=args.ids, all_entries=args.all,
            to=args.to, dry_run=args.dry_run, progress=_progress(args),
        )  # fmt: skip
        if not args.dry_run:
            outcome = (f"{len(report['replayed'])} replayed, {len(report['skipped'])} skipped, "
                       f"{len(report['missing'])} missing")  # fmt: skip
            target = _selected(args) + (f" to {args.to}" if args.to else "")
            await _audit(r, config, args, "dlq replay", target, outcome)
        return report

    try:
        report = _run(config, replay)
    except LookupError as exc:
        return _problem(escape(exc))
    if args.json:
        write_json(report)
    else:
        verb = "would replay" if args.dry_run else "replayed"
        for item in report["replayed"]:
            sys.stdout.write(
                f"{verb} {item['id']} ({escape(item['message_id'])}) -> {escape(item['to'])}\n"
            )
        for item in report["skipped"]:
            sys.stdout.write(f"skipped {item['id']}: {item['reason']}\n")
        for ident in report["missing"]:
            sys.stdout.write(f"missing {escape(ident)}\n")
        sys.stdout.write(
            f"{len(report['replayed'])} {verb}, {len(report['skipped'])} skipped, "
            f"{len(report['missing'])} missing\n"
        )
    return ExitCode.PROBLEM if report["missing"] or report["skipped"] else ExitCode.OK


def _dlq_purge(args: argparse.Namespace, config: Config) -> int:
    if not _confirm(args, f"purge {_selected(args)} of the DLQ for good"):
        return _problem("not purged")

    async def purge(r: AnyRedis) -> Any:
        report = await admin.dlq_purge(
            r, config.redis.key_prefix, ids=args.ids, all_entries=args.all,
            dry_run=args.dry_run, progress=_progress(args),
        )  # fmt: skip
        if not args.dry_run:
            outcome = f"{len(report['purged'])} purged, {len(report['missing'])} missing"
            await _audit(r, config, args, "dlq purge", _selected(args), outcome)
        return report

    report = _run(config, purge)
    if args.json:
        write_json(report)
    else:
        verb = "would purge" if args.dry_run else "purged"
        sys.stdout.write(f"{len(report['purged'])} {verb}, {len(report['missing'])} missing\n")
    return ExitCode.PROBLEM if report["missing"] else ExitCode.OK


def _drain(args: argparse.Namespace, config: Config) -> int:
    if not _confirm(args, f"drain replica {escape(args.instance)} (it closes its sockets)"):
        return _problem("not drained")

    async def drain(r: AnyRedis) -> str:
        token = await admin.request_drain(r, config.redis.key_prefix, args.instance)
        await _audit(r, config, args, "drain", f"replica {args.instance}", f"requested for {token}")
        return token

    try:
        token = _run(config, drain)
    except LookupError as exc:
        return _problem(escape(exc))
    if args.json:
        write_json({"requested": token})
    else:
        sys.stdout.write(
            f"drain requested for {escape(token)}: it drains on its next presence refresh "
            f"(within {duration(config.runtime.presence_refresh_ms)}) and exits within "
            f"{duration(config.runtime.drain_grace_ms)}\n"
        )
    return ExitCode.OK


def _ops_log(args: argparse.Namespace, config: Config) -> int:
    limit = args.limit or config.runtime.admin_list_limit
    records = _run(config, lambda r: read_records(r, config.redis.key_prefix, limit))
    if args.json:
        write_json(records)
        return ExitCode.OK
    rows = [
        (timestamp(e.at_ms), e.source, escape(e.user) + (f" (sudo {escape(e.sudo_user)})"
         if e.sudo_user else ""), escape(e.host), e.action, escape(e.target), escape(e.outcome),
         escape(e.reason) or "-")
        for e in records
    ]  # fmt: skip
    headers = ("WHEN", "SOURCE", "USER", "HOST", "ACTION", "TARGET", "OUTCOME", "REASON")
    sys.stdout.write(table(headers, rows))
    return ExitCode.OK


def register(sub: Any) -> None:
    def add(parent: Any, name: str, help_text: str, func: Callable[..., int]) -> Any:
        parser = parent.add_parser(name, help=help_text, description=help_text)
        add_json(parser)
        parser.set_defaults(func=func, needs_redis=True)
        return parser

    def selection(parser: argparse.ArgumentParser, verb: str, done: str) -> None:
        parser.add_argument(
            "ids", nargs="*", metavar="ID", help=f"DLQ entry ids or message ids to {verb}"
        )
        parser.add_argument("--all", action="store_true", help=f"{verb} every DLQ entry")
        parser.add_argument(
            "--dry-run", action="store_true", help=f"show what would be {done}, change nothing"
        )
        parser.set_defaults(check=lambda args: _check_selection(parser, args))
        changes(parser)

    def changes(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--yes", action="store_true", help="do not ask for confirmation (needed without a "
            "terminal)",
        )  # fmt: skip
        parser.add_argument(
            "--reason", metavar="TEXT", help="why, kept in the operator audit record (ops-log)"
        )

    owners = add(
        sub, "ownership", "replicas, what each owns, and orphans (exit 1 if any)", _ownership
    )
    owners.add_argument("--full", action="store_true", help="list the ids, not just counts")
    add_limit(owners, "most ids per list with --full (default: runtime.admin_list_limit)")
    add(sub, "inbox", "per replica inbox: length, pending, oldest pending age, lag", _inbox)

    dlq = sub.add_parser("dlq", help="the dead-letter queue: list, show, replay, purge")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = add(dlq_sub, "list", "DLQ entries, oldest first", _dlq_list)
    listing.add_argument(
        "--reason", choices=get_args(DeadReason), help="only this dead-letter reason"
    )
    listing.add_argument("--target", help="only this target: node:<id>, session:<id> or an id")
    listing.add_argument(
        "--older-than", type=duration_ms, metavar="AGE",
        help="only entries dead for longer than this, e.g. 90s, 15m, 2h",
    )  # fmt: skip
    add_limit(listing, "most entries (default: runtime.admin_list_limit)")
    show = add(dlq_sub, "show", "one DLQ entry in full (exit 1 if it is not there)", _dlq_show)
    show.add_argument("id", metavar="ID", help="a DLQ entry id or a message id")
    replay = add(dlq_sub, "replay", "send entries again to their target's owner", _dlq_replay)
    selection(replay, "replay", "replayed")
    replay.add_argument("--to", metavar="INSTANCE", help="to this live replica instead")
    purge = add(dlq_sub, "purge", "delete entries for good", _dlq_purge)
    selection(purge, "purge", "purged")

    drain = add(sub, "drain", "ask a replica to drain and exit (like SIGTERM)", _drain)
    drain.add_argument("instance", metavar="INSTANCE", help="instance id of a live replica")
    changes(drain)
    ops_log = add(
        sub, "ops-log", "the operator audit: who replayed, purged or drained what, newest first",
        _ops_log,
    )  # fmt: skip
    add_limit(ops_log, "most records (default: runtime.admin_list_limit)")
