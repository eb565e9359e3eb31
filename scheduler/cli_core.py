"""``nodes``, ``pools``, ``jobs``: read the scheduling state of the configured domain.

Each prints a table, or one JSON document with ``--json``. They only read (no script runs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec

from cross_instance.redis_client import connect
from scheduler.config import Config
from scheduler.scheduling import SchedulingCore

__all__ = ["register"]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _run(config: Config, read: Callable[[SchedulingCore], Awaitable[list[Any]]]) -> list[Any]:
    async def main() -> list[Any]:
        client = connect(config.redis)
        try:
            core = SchedulingCore(client, config.scheduling, key_prefix=config.redis.key_prefix)
            return await read(core)
        finally:
            await client.aclose()

    return anyio.run(main)


def _emit(args: argparse.Namespace, items: list[Any], headers: Sequence[str], row: Any) -> int:
    if args.json:
        sys.stdout.write(msgspec.json.encode(items).decode() + "\n")
    else:
        sys.stdout.write(_table(headers, [row(i) for i in items]))
    return 0


def _nodes(args: argparse.Namespace, config: Config) -> int:
    nodes = _run(config, lambda core: core.list_nodes(limit=args.limit))
    return _emit(
        args,
        nodes,
        ("NODE", "GEN", "RUNNING", "MAX", "ALIVE_UNTIL_MS", "IN_POOLS", "ASR", "SEMANTIC"),
        lambda n: (
            n.node_id,
            n.generation,
            n.running,
            n.max,
            n.alive_until_ms if n.alive_until_ms is not None else "-",
            "yes" if n.in_pools else "no",
            ",".join(n.asr) or "-",
            ",".join(n.semantic) or "-",
        ),
    )


def _pools(args: argparse.Namespace, config: Config) -> int:
    entries = _run(config, lambda core: core.list_pools(pair=args.pair, limit=args.limit))
    return _emit(
        args,
        entries,
        ("PAIR", "NODE", "LOAD_PERMILLE"),
        lambda e: (e.pair, e.node_id, e.load_permille),
    )


def _jobs(args: argparse.Namespace, config: Config) -> int:
    jobs = _run(config, lambda core: core.list_jobs(active_only=args.active, limit=args.limit))
    return _emit(
        args,
        jobs,
        ("JOB", "SESSION", "INDEX", "PAIR", "NODE", "ATTEMPT", "STATE", "DEADLINE_MS"),
        lambda j: (
            j.job_id,
            j.session_id,
            j.utterance_index,
            f"{j.src_lang}:{j.tgt_lang}",
            j.node_id,
            j.attempt,
            j.state,
            j.deadline_ms,
        ),
    )


def register(sub: Any) -> None:
    def add(name: str, help_text: str, func: Callable[[argparse.Namespace, Config], int]) -> Any:
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("--json", action="store_true", help="one JSON document")
        parser.add_argument(
            "--limit", type=int, default=None, help="most entries (default: scheduling.list_limit)"
        )
        parser.set_defaults(func=func)
        return parser

    add("nodes", "registered nodes: generation, slots, liveness, languages", _nodes)
    pools = add("pools", "pool members per directed pair, least-loaded first", _pools)
    pools.add_argument("--pair", help="only this pair, e.g. en:zh")
    jobs = add("jobs", "job records (active and recently finished)", _jobs)
    jobs.add_argument("--active", action="store_true", help="only dispatched / acked / running")
