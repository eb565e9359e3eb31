"""``nodes``, ``pools``, ``jobs``: read the scheduling state of the configured domain.

Each prints a table (times relative to the Redis server's clock), or one JSON document with
``--json`` (raw values). They only read (no script runs).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from cross_instance.redis_client import connect
from scheduler.cli_args import add_json, add_limit, pair
from scheduler.cli_format import escape, relative, table, write_json
from scheduler.config import Config
from scheduler.scheduling import SchedulingCore

__all__ = ["register"]


def _run(
    config: Config, read: Callable[[SchedulingCore], Awaitable[list[Any]]]
) -> tuple[list[Any], int]:
    """What ``read`` returns, and the Redis server's time in ms."""

    async def main() -> tuple[list[Any], int]:
        client = connect(config.redis)
        try:
            core = SchedulingCore(client, config.scheduling, key_prefix=config.redis.key_prefix)
            items = await read(core)
            seconds, micros = await client.time()
            return items, int(seconds) * 1000 + int(micros) // 1000
        finally:
            await client.aclose()

    return anyio.run(main)


def _emit(
    args: argparse.Namespace,
    found: tuple[list[Any], int],
    headers: Sequence[str],
    row: Callable[[Any, int], Sequence[Any]],
) -> int:
    items, now_ms = found
    if args.json:
        write_json(items)
    else:
        print(table(headers, [row(i, now_ms) for i in items]), end="")
    return 0


def _nodes(args: argparse.Namespace, config: Config) -> int:
    return _emit(
        args,
        _run(config, lambda core: core.list_nodes(limit=args.limit)),
        ("NODE", "GEN", "RUNNING", "MAX", "ALIVE_UNTIL", "IN_POOLS", "ASR", "SEMANTIC"),
        lambda n, now: (
            escape(n.node_id),
            n.generation,
            n.running,
            n.max,
            relative(n.alive_until_ms, now),
            "yes" if n.in_pools else "no",
            ",".join(n.asr) or "-",
            ",".join(n.semantic) or "-",
        ),
    )


def _pools(args: argparse.Namespace, config: Config) -> int:
    return _emit(
        args,
        _run(config, lambda core: core.list_pools(pair=args.pair, limit=args.limit)),
        ("PAIR", "NODE", "LOAD_PERMILLE"),
        lambda e, now: (e.pair, escape(e.node_id), e.load_permille),
    )


def _jobs(args: argparse.Namespace, config: Config) -> int:
    return _emit(
        args,
        _run(config, lambda core: core.list_jobs(active_only=args.active, limit=args.limit)),
        ("JOB", "SESSION", "INDEX", "PAIR", "NODE", "ATTEMPT", "STATE", "DEADLINE"),
        lambda j, now: (
            escape(j.job_id),
            escape(j.session_id),
            j.utterance_index,
            f"{j.src_lang}:{j.tgt_lang}",
            escape(j.node_id),
            j.attempt,
            j.state,
            relative(j.deadline_ms, now),
        ),
    )


def register(sub: Any) -> None:
    def add(name: str, help_text: str, func: Callable[[argparse.Namespace, Config], int]) -> Any:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        add_json(parser)
        add_limit(parser, "most entries (default: scheduling.list_limit)")
        parser.set_defaults(func=func, needs_redis=True)
        return parser

    add("nodes", "registered nodes: generation, slots, liveness, languages", _nodes)
    pools = add("pools", "pool members per directed pair, least-loaded first", _pools)
    pools.add_argument("--pair", type=pair, help="only this directed pair, e.g. en:zh")
    jobs = add("jobs", "job records (active and recently finished)", _jobs)
    jobs.add_argument("--active", action="store_true", help="only dispatched / acked / running")
