"""Benchmark (not a test): scheduling decisions per second vs pool size, next to raw EVALSHA.

    python -m tests.bench.bench_lua [--decisions N] [--concurrency C] [--sizes 10,100,...]

Starts its own redis-server. For each pool size it registers that many nodes serving one
directed pair, loads half of their slots with held jobs (so pools hold mixed loads), then runs
``dispatch`` + ``complete`` pairs from C concurrent tasks; each script call is one decision.
In the same run it measures a trivial one-key EVALSHA with the same client and concurrency: the
ceiling of Redis plus redis-py on this machine. Cost per decision must not grow more than 2x from
the smallest to the largest pool.
"""

from __future__ import annotations

import argparse
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


async def decisions(
    client: AnyRedis, nodes: int, decisions_n: int, concurrency: int
) -> tuple[Run, float]:
    config = SchedulingConfig(default_max_concurrent_jobs=SLOTS_PER_NODE)
    core = SchedulingCore(client, config, key_prefix=f"bench{secrets.token_hex(3)}")
    await core.load_scripts()
    setup = time.perf_counter()
    caps = NodeCapabilities(asr=["en"], semantic=["zh"], max_concurrent_jobs=SLOTS_PER_NODE)

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

    pairs = await measure(decisions_n // 2, concurrency, dispatch_complete)
    await client.delete(*core.keys.all())
    q = statistics.quantiles(each, n=100)
    # one measured pair = two decisions (dispatch + complete)
    return Run(pairs.calls_per_s * 2, q[49] * 1000, q[98] * 1000), setup_s


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


async def main(sizes: list[int], decisions_n: int, concurrency: int) -> None:
    server = RedisServerProcess().start()
    client = connect(RedisConfig(url=server.url, max_connections=concurrency * 2))
    try:
        rows = []
        for size in sizes:
            ceiling = await trivial_evalsha(client, decisions_n, concurrency)
            run, setup_s = await decisions(client, size, decisions_n, concurrency)
            rows.append((size, run, ceiling, setup_s))
        print(
            f"{'nodes':>6} | {'decisions/s':>11} | {'p50 ms':>7} | {'p99 ms':>7} | "
            f"{'EVALSHA/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'ratio':>5}"
        )
        print("-" * 82)
        for size, run, ceiling, _ in rows:
            print(
                f"{size:>6} | {run.calls_per_s:>11.0f} | {run.p50_ms:>7.3f} | {run.p99_ms:>7.3f} | "
                f"{ceiling.calls_per_s:>9.0f} | {ceiling.p50_ms:>7.3f} | {ceiling.p99_ms:>7.3f} | "
                f"{run.calls_per_s / ceiling.calls_per_s:>5.2f}"
            )
        # cost per decision, normalised by the ceiling of the same moment (noisy machines)
        first, last = rows[0], rows[-1]
        cost_first = first[2].calls_per_s / first[1].calls_per_s
        cost_last = last[2].calls_per_s / last[1].calls_per_s
        growth = cost_last / cost_first
        verdict = "OK" if growth <= 2 else "TOO SLOW"
        print(
            f"\ncost per decision, {last[0]} vs {first[0]} nodes: x{growth:.2f} "
            f"(acceptance: <= x2) {verdict}"
        )
        print(f"decisions per size: {decisions_n}, concurrency: {concurrency}")
    finally:
        await client.aclose()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--decisions", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    ns = parser.parse_args()
    anyio.run(
        main,
        [int(s) for s in ns.sizes.split(",")],
        ns.decisions,
        ns.concurrency,
        backend_options={"use_uvloop": True},
    )
