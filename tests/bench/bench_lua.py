"""Benchmark (not a test): scheduling decisions per second vs pool size and pairs per node.

    python -m tests.bench.bench_lua [--decisions N] [--concurrency C] [--sizes 10,100,...]
                                    [--pairs 1,100,10000] [--max-members M]

Starts its own redis-server. For each cell (pool size x pairs per node) it registers that many
nodes, each serving that many directed pairs (sqrt(pairs) languages per list, as a real node's
one list for asr and semantic), loads half of their slots with held jobs (so pools hold mixed
loads), then runs ``dispatch`` + ``complete`` pairs from C concurrent tasks; each script call is
one decision. Cells with more than M pool members (nodes x pairs) are skipped. In the same run
and before each cell it measures a trivial one-key EVALSHA with the same client and
concurrency: the ceiling of Redis plus redis-py on this machine. Cost per decision (normalised by
that ceiling) must not grow more than 2x from the fewest to the most pairs per node, nor from
the smallest to the largest pool.
"""

from __future__ import annotations

import argparse
import math
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis, connect
from cross_instance.redis_server import RedisServerProcess
from scheduler.config import SchedulingConfig
from scheduler.scheduling import DispatchRequest, NodeCapabilities, SchedulingCore

SLOTS_PER_NODE = 4
PRELOAD_SLOTS = 2  # held jobs per node: every node half busy, loads are mixed


class Run(msgspec.Struct):
    calls_per_s: float
    p50_ms: float
    p99_ms: float


async def measure(calls: int, concurrency: int, call: Callable[[int], Awaitable[None]]) -> Run:
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return Run(len(latencies) / elapsed, q[49] * 1000, q[98] * 1000)


async def trivial_evalsha(client: AnyRedis, calls: int, concurrency: int) -> Run:
    sha = await client.script_load("return redis.call('EXISTS', KEYS[1])")

    async def call(i: int) -> None:
        await client.evalsha(sha, 1, "bench:{ceiling}:k")

    return await measure(calls, concurrency, call)


def languages(pairs: int) -> list[str]:
    """sqrt(pairs) language codes, "en" and "zh" (the benchmarked pair) among them."""
    count = math.isqrt(pairs)
    if count * count != pairs:
        raise SystemExit(f"--pairs: {pairs} is not a square (one list for asr and semantic)")
    if count == 1:
        return ["en"]
    # codes from the private-use range qaa..qtz: valid language codes, none "en" or "zh"
    return ["en", "zh", *(f"q{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(count - 2))]


async def script_usec(client: AnyRedis) -> tuple[int, int]:
    """Calls and microseconds Redis spent in scripts so far (EVALSHA, and EVAL after NOSCRIPT)."""
    stats = await client.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        calls += int(stats.get(name, {}).get("calls", 0))
        usec += int(stats.get(name, {}).get("usec", 0))
    return calls, usec


async def decisions(
    client: AnyRedis, nodes: int, pairs: int, decisions_n: int, concurrency: int
) -> tuple[Run, float, float]:
    config = SchedulingConfig(default_max_concurrent_jobs=SLOTS_PER_NODE)
    core = SchedulingCore(client, config, key_prefix=f"bench{secrets.token_hex(3)}")
    await core.load_scripts()
    setup = time.perf_counter()
    langs = languages(pairs)
    caps = NodeCapabilities(
        asr=langs, semantic=langs if pairs > 1 else ["zh"], max_concurrent_jobs=SLOTS_PER_NODE
    )

    async def register(i: int) -> None:
        await core.register_node(f"node-{i:05d}", caps)

    await measure(nodes, concurrency, register)

    async def preload(i: int) -> None:
        await core.dispatch(_request(f"pre{i}", i))

    await measure(nodes * PRELOAD_SLOTS, concurrency, preload)
    setup_s = time.perf_counter() - setup

    each: list[float] = []  # latency of every single script call

    async def dispatch_complete(i: int) -> None:
        t = time.perf_counter()
        job = await core.dispatch(_request(f"s{i}", i))
        t2 = time.perf_counter()
        await core.complete(job.job_id, job.node_id, job.attempt, ok=True)
        each.extend((t2 - t, time.perf_counter() - t2))

    calls_before, usec_before = await script_usec(client)
    rounds = await measure(decisions_n // 2, concurrency, dispatch_complete)
    calls_after, usec_after = await script_usec(client)
    redis_us = (usec_after - usec_before) / (calls_after - calls_before)
    await client.delete(*core.keys.all())
    q = statistics.quantiles(each, n=100)
    # one measured round = two decisions (dispatch + complete)
    return Run(rounds.calls_per_s * 2, q[49] * 1000, q[98] * 1000), setup_s, redis_us


def _request(session: str, index: int) -> DispatchRequest:
    return DispatchRequest(
        session_id=session,
        utterance_index=index,
        src_lang="en",
        tgt_lang="zh",
        turn_id=f"t-{session}",
        reason="manual",
        payload='{"type":"job_assign"}',
    )


class Cell(msgspec.Struct):
    nodes: int
    pairs: int
    run: Run
    ceiling: Run
    setup_s: float
    redis_us: float  # microseconds Redis spent per decision (its own command statistics)

    @property
    def cost(self) -> float:
        """Client-side cost per decision in trivial EVALSHAs of the same moment."""
        return self.ceiling.calls_per_s / self.run.calls_per_s


def growth(cells: list[Cell], along: str, fixed: str) -> list[tuple[int, int, int, float, float]]:
    """For each value of ``fixed``: (fixed value, first and last of ``along``, growth of the
    Redis time per decision, growth of the client-side cost), last over first."""
    out = []
    for value in sorted({getattr(c, fixed) for c in cells}):
        line = sorted(
            (c for c in cells if getattr(c, fixed) == value), key=lambda c: getattr(c, along)
        )
        if len(line) > 1:
            a, b = line[0], line[-1]
            redis_x, client_x = b.redis_us / a.redis_us, b.cost / a.cost
            out.append((value, getattr(a, along), getattr(b, along), redis_x, client_x))
    return out


async def main(
    sizes: list[int], pairs_list: list[int], max_members: int, decisions_n: int, concurrency: int
) -> None:
    server = RedisServerProcess().start()
    client = connect(RedisConfig(url=server.url, max_connections=concurrency * 2))
    try:
        cells = []
        for size in sizes:
            for pairs in pairs_list:
                if size * pairs > max_members:
                    continue
                ceiling = await trivial_evalsha(client, decisions_n, concurrency)
                run, setup_s, redis_us = await decisions(
                    client, size, pairs, decisions_n, concurrency
                )
                cells.append(Cell(size, pairs, run, ceiling, setup_s, redis_us))
        print(
            f"{'nodes':>6} | {'pairs/node':>10} | {'decisions/s':>11} | {'p50 ms':>7} | "
            f"{'p99 ms':>7} | {'Redis us':>8} | {'EVALSHA/s':>9} | {'p50 ms':>7} | "
            f"{'p99 ms':>7} | {'ratio':>5}"
        )
        print("-" * 106)
        for c in cells:
            print(
                f"{c.nodes:>6} | {c.pairs:>10} | {c.run.calls_per_s:>11.0f} | "
                f"{c.run.p50_ms:>7.3f} | {c.run.p99_ms:>7.3f} | {c.redis_us:>8.1f} | "
                f"{c.ceiling.calls_per_s:>9.0f} | {c.ceiling.p50_ms:>7.3f} | "
                f"{c.ceiling.p99_ms:>7.3f} | {1 / c.cost:>5.2f}"
            )
        print("\ncost per decision, last over first (Redis time; client-side cost in EVALSHAs):")
        worst = 0.0
        for fixed, along, unit in (("nodes", "pairs", "pairs/node"), ("pairs", "nodes", "nodes")):
            for value, first, last, redis_x, client_x in growth(cells, along, fixed):
                worst = max(worst, redis_x)
                print(
                    f"  {last} vs {first} {unit} ({fixed} = {value}): "
                    f"x{redis_x:.2f} (client x{client_x:.2f})"
                )
        verdict = "OK" if worst <= 2 else "TOO SLOW"
        print(
            f"worst growth of Redis time per decision: x{worst:.2f} (acceptance: <= x2) {verdict}"
        )
        print(
            f"decisions per cell: {decisions_n}, concurrency: {concurrency}, "
            f"cells above {max_members} pool members skipped"
        )
    finally:
        await client.aclose()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--pairs", default="1,100,10000", help="pairs per node (squares)")
    parser.add_argument("--max-members", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    ns = parser.parse_args()
    anyio.run(
        main,
        [int(s) for s in ns.sizes.split(",")],
        [int(p) for p in ns.pairs.split(",")],
        ns.max_members,
        ns.decisions,
        ns.concurrency,
        backend_options={"use_uvloop": True},
    )
