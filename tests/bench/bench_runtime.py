"""Benchmark (not a test): cross-instance messages per second and latency, next to raw Streams.

    python -m tests.bench.bench_runtime [--messages N] [--local-messages N] [--concurrency 1,16]

Starts its own redis-server and two runtimes, A and B, in this one process (one event loop).
B claims a session and A sends to it: ``resolve_owner`` + ``XADD`` on A, then B's reader
(``XREADGROUP`` on its own connection, dedup check, handler, dedup mark, ``ack_entry``). The
loop is closed: C tasks each send one message and wait until B's handler has it, so C messages
are in flight and latency is send -> handler with no unbounded queue behind it. A also sends to
a session it owns itself: the in-process short circuit. In the same run, with the same client
settings and the same process shape, plain redis-py does XADD, XREADGROUP (batch, dedicated
connection) and one XACK per batch: the ceiling of Redis Streams + redis-py on this machine.
Server commands per message come from ``INFO commandstats``, server CPU from ``INFO cpu``.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from cross_instance.config import RedisConfig, RuntimeConfig
from cross_instance.envelope import Envelope
from cross_instance.redis_client import AnyRedis, connect, connect_blocking
from cross_instance.redis_server import RedisServerProcess
from cross_instance.runtime import Runtime
from tests.bench import concurrency_levels

LOCAL_SESSION = "bench-local"
REMOTE_SESSION = "bench-remote"
RAW_GROUP = "bench"
RAW_BLOCK_MS = 100  # the raw consumer re-checks its stop flag this often
PAYLOAD_PAD = "x" * 200  # about the size of a small relayed result message
ARRIVAL_TIMEOUT_S = 10.0  # a message that never arrives fails the run instead of hanging it


class Run(msgspec.Struct):
    msgs_per_s: float
    p50_ms: float  # send -> handler (remote), the whole send (local)
    p99_ms: float
    call_p50_ms: float  # the sender's own call: send_to_session / XADD
    commands: dict[str, tuple[float, float]]  # command: (calls per message, usec per call)
    server_us: float  # redis-server CPU per message
    client_cpu: float  # CPU of this process (both sides) / wall time, over the measured phase


class Arrivals:
    """Correlates a sent sequence number with its arrival at the consumer."""

    def __init__(self) -> None:
        self.waiting: dict[str, tuple[float, anyio.Event]] = {}
        self.latencies: list[float] = []

    def expect(self, key: str) -> anyio.Event:
        event = anyio.Event()
        self.waiting[key] = (time.perf_counter(), event)
        return event

    def arrive(self, key: str) -> None:
        start, event = self.waiting.pop(key)
        self.latencies.append(time.perf_counter() - start)
        event.set()

    async def handler(self, envelope: Envelope) -> None:
        self.arrive(envelope.payload.partition(":")[0])


class Phase(msgspec.Struct):
    msgs_per_s: float
    calls: list[float]  # the sender's call times
    client_cpu: float


async def closed_loop(
    messages: int, concurrency: int, one: Callable[[int], Awaitable[float]]
) -> Phase:
    """``one(i)`` sends message i and returns once it arrived, with its sender call time."""
    counter = iter(range(messages))
    calls: list[float] = []

    async def worker() -> None:
        for i in counter:
            calls.append(await one(i))

    start, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    wall = time.perf_counter() - start
    return Phase(messages / wall, calls, (time.process_time() - cpu) / wall)


def _ms(samples: list[float], pct: int) -> float:
    return statistics.quantiles(samples, n=100)[pct - 1] * 1000


class CommandStats:
    """Server commands and redis-server CPU per message over one phase (the runtimes' background
    loops add a few commands per second). CPU comes from ``INFO cpu`` (main thread, user + sys):
    ``commandstats`` usec would count a script and the commands inside it twice."""

    def __init__(self, client: AnyRedis) -> None:
        self.client = client
        self.cpu_s = 0.0

    async def _cpu_s(self) -> float:
        cpu = await self.client.info("cpu")
        return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])

    async def reset(self) -> None:
        await self.client.config_resetstat()
        self.cpu_s = await self._cpu_s()

    async def per_message(self, messages: int) -> tuple[dict[str, tuple[float, float]], float]:
        """{command: (calls per message, usec per call)}, redis-server CPU us per message."""
        cpu_us = (await self._cpu_s() - self.cpu_s) * 1e6 / messages
        stats = await self.client.info("commandstats")
        calls: dict[str, tuple[float, float]] = {}
        for name, row in stats.items():
            command = name.removeprefix("cmdstat_")
            if command in ("config|resetstat", "info"):
                continue
            calls[command] = (row["calls"] / messages, float(row["usec_per_call"]))
        return dict(sorted(calls.items(), key=lambda kv: -kv[1][0])), cpu_us


async def local_run(a: Runtime, messages: int, concurrency: int) -> Run:
    latencies: list[float] = []

    async def one(i: int) -> float:
        t = time.perf_counter()
        result = await a.send_to_session(LOCAL_SESSION, "bench", f"{i}:{PAYLOAD_PAD}")
        assert result.route == "local", result
        latencies.append(time.perf_counter() - t)
        return latencies[-1]

    await closed_loop(min(messages, 500), concurrency, one)  # warm-up
    latencies.clear()
    run = await closed_loop(messages, concurrency, one)
    p50, p99, call = _ms(latencies, 50), _ms(latencies, 99), _ms(run.calls, 50)
    return Run(run.msgs_per_s, p50, p99, call, {}, 0.0, run.client_cpu)


async def remote_run(
    a: Runtime, arrivals: Arrivals, stats: CommandStats, messages: int, concurrency: int
) -> Run:
    round_tag = secrets.token_hex(2)

    async def one(i: int) -> float:
        key = f"{round_tag}{i}"
        arrived = arrivals.expect(key)
        t = time.perf_counter()
        result = await a.send_to_session(REMOTE_SESSION, "bench", f"{key}:{PAYLOAD_PAD}")
        call = time.perf_counter() - t
        assert result.route == "remote", result
        with anyio.fail_after(ARRIVAL_TIMEOUT_S):
            await arrived.wait()
        return call

    await closed_loop(min(messages, 300), concurrency, one)  # warm-up: pools, scripts
    round_tag = secrets.token_hex(2)
    arrivals.latencies.clear()
    await stats.reset()
    run = await closed_loop(messages, concurrency, one)
    commands, server_us = await stats.per_message(messages)
    lat = arrivals.latencies
    p50, p99, call = _ms(lat, 50), _ms(lat, 99), _ms(run.calls, 50)
    return Run(run.msgs_per_s, p50, p99, call, commands, server_us, run.client_cpu)


async def raw_run(config: RedisConfig, stats: CommandStats, messages: int, concurrency: int) -> Run:
    """The same closed loop on plain redis-py: XADD; XREADGROUP a batch; one XACK per batch."""
    client = connect(config)
    reader = connect_blocking(config, RAW_BLOCK_MS)
    stream = f"{config.key_prefix}:raw:{secrets.token_hex(3)}"
    await client.xgroup_create(stream, RAW_GROUP, id="0", mkstream=True)
    arrivals = Arrivals()
    stop = False

    async def consume() -> None:
        while not stop:
            response: Any = await reader.xreadgroup(
                RAW_GROUP, "c", {stream: ">"}, count=64, block=RAW_BLOCK_MS
            )
            for _stream, entries in response or []:
                for _entry_id, fields in entries:
                    arrivals.arrive(fields["k"])
                await client.xack(stream, RAW_GROUP, *(entry_id for entry_id, _ in entries))

    round_tag = ""

    async def one(i: int) -> float:
        key = f"{round_tag}{i}"
        arrived = arrivals.expect(key)
        t = time.perf_counter()
        await client.xadd(stream, {"k": key, "env": PAYLOAD_PAD})
        call = time.perf_counter() - t
        with anyio.fail_after(ARRIVAL_TIMEOUT_S):
            await arrived.wait()
        return call

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            round_tag = "w"
            await closed_loop(min(messages, 300), concurrency, one)  # warm-up
            round_tag = "m"
            arrivals.latencies.clear()
            await stats.reset()
            run = await closed_loop(messages, concurrency, one)
            commands, server_us = await stats.per_message(messages)
            stop = True
    finally:
        await client.delete(stream)
        await reader.aclose()
        await client.aclose()
    lat = arrivals.latencies
    p50, p99, call = _ms(lat, 50), _ms(lat, 99), _ms(run.calls, 50)
    return Run(run.msgs_per_s, p50, p99, call, commands, server_us, run.client_cpu)


def _commands(run: Run) -> str:
    shown = [f"{name} {n:.2f} ({us:.1f})" for name, (n, us) in run.commands.items() if n >= 0.01]
    return ", ".join(shown)


async def main(messages: int, local_messages: int, concurrencies: list[int]) -> None:
    server = RedisServerProcess().start()
    config = RedisConfig(
        url=server.url,
        key_prefix=f"bench{secrets.token_hex(3)}",
        max_connections=max(concurrencies) * 2 + 8,
    )
    admin = connect(config)
    stats = CommandStats(admin)
    arrivals = Arrivals()
    received_local = 0

    async def local_handler(envelope: Envelope) -> None:
        nonlocal received_local
        received_local += 1

    a = Runtime(config, RuntimeConfig(instance_id="bench-a"), local_handler)
    b = Runtime(config, RuntimeConfig(instance_id="bench-b"), arrivals.handler)
    started = time.perf_counter()
    rows: list[tuple[str, int, Run, Run | None]] = []
    try:
        async with a, b:
            await a.claim_session(LOCAL_SESSION)
            await b.claim_session(REMOTE_SESSION)
            local_concurrency = max(concurrencies)
            local = await local_run(a, local_messages, local_concurrency)
            assert received_local >= local_messages
            rows.append(("local (in process)", local_concurrency, local, None))
            for concurrency in concurrencies:
                # ceiling first, then the runtime, at the same moment of a noisy machine
                raw = await raw_run(config, stats, messages, concurrency)
                remote = await remote_run(a, arrivals, stats, messages, concurrency)
                rows.append(("raw XADD/XREADGROUP/XACK", concurrency, raw, None))
                rows.append(("remote A -> B (runtime)", concurrency, remote, raw))
    finally:
        await admin.aclose()
        server.stop()

    print(
        f"{'path':<26} | {'conc':>4} | {'msgs/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | "
        f"{'call p50':>8} | {'srv us':>6} | {'py cpu':>6} | {'ratio':>5}"
    )
    print("-" * 99)
    for name, concurrency, run, ceiling in rows:
        ratio = f"{run.msgs_per_s / ceiling.msgs_per_s:>5.2f}" if ceiling else f"{'':>5}"
        server_us = f"{run.server_us:>6.1f}" if run.commands else f"{'-':>6}"
        print(
            f"{name:<26} | {concurrency:>4} | {run.msgs_per_s:>7.0f} | {run.p50_ms:>7.3f} | "
            f"{run.p99_ms:>7.3f} | {run.call_p50_ms:>8.3f} | {server_us} | "
            f"{run.client_cpu:>6.0%} | {ratio}"
        )
    print("\nserver commands per message (usec per call), INFO commandstats; commands inside")
    print("scripts are counted too, and their time is also inside evalsha's:")
    for name, concurrency, run, _ in rows:
        if run.commands:
            print(f"  {name}, c={concurrency}: {_commands(run)}")
    print(
        f"\nremote messages per concurrency: {messages}, local: {local_messages}; "
        f"one process, one event loop; {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--local-messages", type=int, default=20000)
    parser.add_argument("--concurrency", type=concurrency_levels, default=[1, 16])
    ns = parser.parse_args()
    if ns.messages < 100 or ns.local_messages < 100:
        parser.error("--messages and --local-messages need at least 100 (for p99)")
    anyio.run(
        main,
        ns.messages,
        ns.local_messages,
        ns.concurrency,
        backend_options={"use_uvloop": True},
    )
