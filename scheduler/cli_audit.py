"""``audit``: reconcile the live Redis state (:mod:`scheduler.audit`) and say what is wrong.

A table per check (status, count, examples), or the raw report with ``--json``. Exit codes
(:class:`scheduler.cli_errors.ExitCode`): 0 clean, 1 violations found, 3 Redis unreachable.
The CLI reads everything, in pages of ``audit.page_size``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

from cross_instance.redis_client import connect
from scheduler.audit import Auditor, AuditReport
from scheduler.cli_args import add_json
from scheduler.cli_errors import ExitCode
from scheduler.cli_format import duration, escape, table, write_json
from scheduler.config import Config

__all__ = ["register"]


def _read(config: Config) -> AuditReport:
    async def main() -> AuditReport:
        client = connect(config.redis)
        try:
            return await Auditor(client, config).run()
        finally:
            await client.aclose()

    return anyio.run(main)


def _audit(args: argparse.Namespace, config: Config) -> int:
    report = _read(config)
    code = ExitCode.OK if report.ok else ExitCode.PROBLEM
    if args.json:
        write_json(report.to_builtins())
        return code
    rows = [
        (
            name,
            "ok" if result.ok else "VIOLATION",
            result.count,
            ", ".join(escape(v.subject) for v in result.examples) or "-",
        )
        for name, result in report.checks.items()
    ]
    sys.stdout.write(table(("CHECK", "STATUS", "COUNT", "EXAMPLES"), rows))
    for result in report.checks.values():
        for v in result.examples:
            sys.stdout.write(f"{v.check}: {escape(v.subject)}: {escape(v.reason)}\n")
    if report.dlq_depth:
        sys.stdout.write(
            f"DLQ: {report.dlq_depth} entries, the oldest {duration(report.dlq_oldest_age_ms)} "
            "old ('dlq list' shows them)\n"
        )
    return code


def register(sub: Any) -> None:
    help_text = (
        "reconcile slots, jobs, ownership, inboxes and the DLQ against the invariants "
        "(exit 1 on a violation)"
    )
    parser = sub.add_parser("audit", help=help_text, description=help_text)
    add_json(parser)
    parser.set_defaults(func=_audit, needs_redis=True)
