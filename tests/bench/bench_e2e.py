"""Benchmark (not a test): an utterance through real replicas, next to a bare WebSocket round trip.

    python -m tests.bench.bench_e2e [--utterances N] [--concurrency 1,8] [--hangover-manual-ms MS]

Starts its own redis-server and two real ``lingua-scheduler serve`` replicas, A and B (child
processes, ``tests/e2e/daemons.py``), driven by the simulated browser and node of
``tests/e2e/clients.py``, which send exactly what the real clients send. Each browser speaks one
~200 ms Plan-A chunk, then the manual cut (``audio_chunk`` with ``is_final``), and waits for its
``translation_result``; the node answers each ``job_assign`` at once (no compute). Per utterance:

* dispatch: the browser sends its final chunk -> the node receives ``job_assign``;
* relay: the node sends ``job_result`` -> the browser receives ``translation_result``;
* sum: both, the scheduler's own share of an utterance's round trip.

Every timestamp is taken in this one process (``perf_counter``), in the clients' receive loops at
the moment a frame comes out of the socket, not by polling. Two topologies: 1 replica (browser and
node on A: the in-process path) and 2 replicas (browser on A, node on B: every message crosses the
Redis stream runtime). C browsers speak at once, closed loop (one utterance in flight each), with
one node per browser. In the same run, at each concurrency, the ceiling: a bare echo server on the
same ``websockets`` library, in this process, with the sims' client settings; an "utterance" there
is two round trips of a ``job_result``-sized JSON frame (0.3 KB), each with the same socket hops as
one leg. ``x echo`` divides a leg's p50 by that ceiling's. The same echo in a child process (one
more process hop, as browser -> replica -> node has; and a core of its own) is shown as well
(``x child``). CPU per utterance comes from ``/proc``. Replica settings are the defaults except the
manual-cut hangover (0 here; 200 ms by default, a deliberate wait before a manual finalize), INFO
logging, and the per-connection session message rate: a closed-loop speaker sends utterances back to
back, far above any real browser, and would meet ``limits.session_messages_per_second`` (20) once its
burst is spent; the benchmark measures the scheduler, not that limit.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from cross_instance.redis_server import RedisServerProcess, free_port
from tests.bench import concurrency_levels
from tests.e2e.clients import Message, SimBrowser, SimNode, _Peer, opus_plan_a
from tests.e2e.daemons import Replica

LEGS = ("dispatch", "relay", "sum")
ECHO_IN_PROCESS = "WS echo, this process"  # the ceiling: "x echo" divides by it
ECHO_CHILD_PROCESS = "WS echo, child process"  # "x child"
ECHO_LEGS = ("1st trip", "2nd trip", "both")
WAIT_S = 10.0  # an utterance that never comes back fails the run instead of hanging it
HEARTBEAT_S = 15.0  # the real node agent's beat
SETTLE_S = 0.3  # after registering nodes / closing a phase's peers
LANGS = ["zh", "en", "ja", "ko", "de", "fr", "es", "it", "ru", "pt", "ar", "hi", "vi", "th"]
AUDIO = opus_plan_a(10)  # one ~200 ms chunk, as the browser sends


@dataclass(slots=True)
class Marks:
    """perf_counter timestamps of one utterance; 0.0 until reached."""

    final_sent: float = 0.0
    assign_received: float = 0.0
    result_sent: float = 0.0
    result_received: float = 0.0
    error: Message | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    def legs(self) -> tuple[float, float, float]:
        dispatch = self.assign_received - self.final_sent
        relay = self.result_received - self.result_sent
        return dispatch, relay, dispatch + relay


Ledger = dict[tuple[str, int], Marks]  # (session_id, utterance_index) -> marks


class TimedNode(SimNode):
    """The sim node, answering each ``job_assign`` from its receive loop with ``job_result``."""

    def __init__(self, url: str, langs: tuple[list[str], list[str]], ledger: Ledger) -> None:
        super().__init__(url, langs)
        self.ledger = ledger

    async def on_frame(self, message: Message, at: float) -> bool:
        if message.get("type") != "job_assign":
            return True
        marks = self.ledger[(message["session_id"], message["utterance_index"])]
        marks.assign_received = at
        marks.result_sent = time.perf_counter()
        await self.send(self.result_for(message))
        return False

    async def heartbeats(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_S)
            await self.send(self.heartbeat_message())


class TimedBrowser(SimBrowser):
    """The sim browser, timestamping ``translation_result`` in its receive loop."""

    def __init__(self, url: str, src: str, tgt: str, ledger: Ledger) -> None:
        super().__init__(url, src, tgt)
        self.ledger = ledger
        self.next_index = 0  # dense from 0 per session: one per non-empty cut

    async def on_frame(self, message: Message, at: float) -> bool:
        kind = message.get("type")
        if kind == "translation_result":
            marks = self.ledger[(message["session_id"], message["utterance_index"])]
            marks.result_received = at
            marks.done.set()
            return False
        if kind == "ui_event" and message.get("event") != "ERROR":
            return False  # DISPATCHED, ASR_FINAL, NMT_DONE
        if kind in ("error", "missing_result"):
            # The utterance in flight on this session failed: fail the run.
            failed = self.ledger.get((self.session_id or "", self.next_index - 1))
            if failed is not None and not failed.done.is_set():
                failed.error = message
                failed.done.set()
        return True

    async def utterance(self) -> Marks:
        assert self.session_id is not None
        marks = self.ledger[(self.session_id, self.next_index)] = Marks()
        self.next_index += 1
        await self.chunk(AUDIO)
        marks.final_sent = time.perf_counter()
        await self.final()
        with anyio.fail_after(WAIT_S):
            await marks.done.wait()
        if marks.error is not None:
            raise RuntimeError(f"utterance failed: {marks.error}")
        return marks


@dataclass
class Row:
    name: str
    concurrency: int
    per_s: float
    legs: list[list[float]]  # per leg, seconds
    cpu_ms: dict[str, float]  # process group -> CPU ms per utterance


async def closed_loop(
    total: int, speakers: list[Callable[[], Awaitable[tuple[float, float, float]]]]
) -> tuple[float, list[list[float]]]:
    """Each speaker runs one utterance at a time until ``total`` are done: (per second, legs)."""
    counter = iter(range(total))
    legs: list[list[float]] = [[], [], []]

    async def worker(speak: Callable[[], Awaitable[tuple[float, float, float]]]) -> None:
        for _ in counter:
            for samples, value in zip(legs, await speak(), strict=True):
                samples.append(value)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for speak in speakers:
            tg.start_soon(worker, speak)
    return total / (time.perf_counter() - start), legs


class CpuMeter:
    """CPU seconds of processes (``/proc/<pid>/stat``) and of this one, over one phase."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out = {"bench (clients)": time.process_time()}
        for group, pids in self.pids.items():
            total = 0.0
            for pid in pids:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
            out[group] = total
        return out

    def reset(self) -> None:
        self.start = self._now()

    def per_utterance_ms(self, utterances: int) -> dict[str, float]:
        now = self._now()
        return {k: (now[k] - self.start[k]) * 1000 / utterances for k in now}


ECHO_CHILD = """
import asyncio, sys, uvloop
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, max_size=None):
        await asyncio.Future()

uvloop.run(main())
"""


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def echo_row(
    name: str, url: str, utterances: int, concurrency: int, warmup: int, cpu: CpuMeter
) -> Row:
    """C clients, closed loop; one "utterance" = two round trips of a ``job_result`` frame."""
    frame = SimNode("").result_for(
        {"job_id": "job-0", "attempt_id": 1, "session_id": "s-0", "utterance_index": 0,
         "trace_id": "t-0"}
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        clients: list[ClientConnection] = []
        for _ in range(concurrency):
            # the sims' own client settings (tests/e2e/clients.py _Peer.connect)
            ws = await connect(url, compression=None, max_size=None, open_timeout=5)
            stack.push_async_callback(ws.close)
            clients.append(ws)

        def speaker(ws: ClientConnection) -> Callable[[], Awaitable[tuple[float, float, float]]]:
            async def trip() -> float:
                sent = time.perf_counter()
                await ws.send(orjson.dumps(frame).decode())
                reply = await ws.recv()
                received = time.perf_counter()
                orjson.loads(reply)
                return received - sent

            async def speak() -> tuple[float, float, float]:
                first = await trip()
                second = await trip()
                return first, second, first + second

            return speak

        speakers = [speaker(ws) for ws in clients]
        await closed_loop(warmup, speakers)
        cpu.reset()
        per_s, legs = await closed_loop(utterances, speakers)
        return Row(name, concurrency, per_s, legs, cpu.per_utterance_ms(utterances))


async def echo_rows(
    child_url: str, utterances: int, concurrency: int, warmup: int, cpu: CpuMeter
) -> list[Row]:
    """The ceiling (echo server in this process), then the same echo in a child process."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    async with serve(_echo, "127.0.0.1", port, compression=None, max_size=None):
        ceiling = await echo_row(ECHO_IN_PROCESS, url, utterances, concurrency, warmup, cpu)
    other = await echo_row(ECHO_CHILD_PROCESS, child_url, utterances, concurrency, warmup, cpu)
    return [ceiling, other]


def start_echo_child() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", ECHO_CHILD, str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return child, f"ws://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    child.kill()
    raise RuntimeError("the echo child process did not listen in 10 s")


async def scheduler_row(
    name: str,
    browser_replica: Replica,
    node_replica: Replica,
    pair: tuple[str, str],
    utterances: int,
    concurrency: int,
    warmup: int,
    cpu: CpuMeter,
) -> Row:
    src, tgt = pair
    ledger: Ledger = {}
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:

        async def start(peer: _Peer) -> None:
            await peer.connect()
            tg.start_soon(peer.pump)
            stack.push_async_callback(peer.close)

        for _ in range(concurrency):
            node = TimedNode(node_replica.ws + "/ws/node", ([src], [tgt]), ledger)
            await start(node)
            await node.register()
            tg.start_soon(node.heartbeats)
        await anyio.sleep(SETTLE_S)
        browsers = []
        for _ in range(concurrency):
            browser = TimedBrowser(browser_replica.ws + "/ws/session", src, tgt, ledger)
            await start(browser)
            await browser.init()
            browsers.append(browser)

        def speaker(browser: TimedBrowser) -> Callable[[], Awaitable[tuple[float, float, float]]]:
            async def speak() -> tuple[float, float, float]:
                return (await browser.utterance()).legs()

            return speak

        speakers = [speaker(b) for b in browsers]
        await closed_loop(warmup, speakers)  # connections, scripts, caches
        cpu.reset()
        per_s, legs = await closed_loop(utterances, speakers)
        usage = cpu.per_utterance_ms(utterances)
        await stack.aclose()
        tg.cancel_scope.cancel()
    await anyio.sleep(SETTLE_S)  # let the replicas clean the sessions and nodes up
    return Row(name, concurrency, per_s, legs, usage)


def _pct(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1000, q[94] * 1000, q[98] * 1000


def print_rows(rows: list[Row]) -> None:
    print(
        f"{'path':<24} | {'conc':>4} | {'utt/s':>5} | {'leg':<8} | {'p50 ms':>7} | "
        f"{'p95 ms':>7} | {'p99 ms':>7} | {'x echo':>6} | {'x child':>7}"
    )
    print("-" * 99)
    echo_p50: dict[tuple[str, int], list[float]] = {}  # (echo row, concurrency) -> p50 per leg
    for row in rows:
        echo = row.name in (ECHO_IN_PROCESS, ECHO_CHILD_PROCESS)
        p50s = []
        for i, (leg, samples) in enumerate(zip(ECHO_LEGS if echo else LEGS, row.legs, strict=True)):
            p50, p95, p99 = _pct(samples)
            p50s.append(p50)
            ratios = []
            for base in (ECHO_IN_PROCESS, ECHO_CHILD_PROCESS):
                floor = echo_p50.get((base, row.concurrency))
                ratios.append(f"{p50 / floor[i]:.1f}" if floor and base != row.name else "")
            head = (
                f"{row.name:<24} | {row.concurrency:>4} | {row.per_s:>5.0f}"
                if i == 0
                else f"{'':<24} | {'':>4} | {'':>5}"
            )
            print(
                f"{head} | {leg:<8} | {p50:>7.3f} | {p95:>7.3f} | {p99:>7.3f} | "
                f"{ratios[0]:>6} | {ratios[1]:>7}"
            )
        if echo:
            echo_p50[(row.name, row.concurrency)] = p50s
    groups = list(rows[0].cpu_ms)
    print("\nCPU per utterance, ms (/proc; every process shares the same cores):")
    print(f"{'path':<24} | {'conc':>4} | " + " | ".join(f"{g:>15}" for g in groups))
    for row in rows:
        if row.name in (ECHO_IN_PROCESS, ECHO_CHILD_PROCESS):
            continue
        cells = " | ".join(f"{row.cpu_ms[g]:>15.2f}" for g in groups)
        print(f"{row.name:<24} | {row.concurrency:>4} | {cells}")


async def run(
    a: Replica,
    b: Replica,
    echo_url: str,
    cpu: CpuMeter,
    utterances: int,
    concurrencies: list[int],
) -> list[Row]:
    pairs = itertools.permutations(LANGS, 2)  # a pool of its own for every phase
    rows: list[Row] = []
    for concurrency in concurrencies:
        warmup = max(20, 3 * concurrency)
        # ceiling first, then the scheduler, at the same moment of a noisy machine
        rows.extend(await echo_rows(echo_url, utterances, concurrency, warmup, cpu))
        rows.append(
            await scheduler_row(
                "1 replica (in process)", a, a, next(pairs), utterances, concurrency, warmup, cpu
            )
        )
        rows.append(
            await scheduler_row(
                "2 replicas (A -> B)", a, b, next(pairs), utterances, concurrency, warmup, cpu
            )
        )
    return rows


def main(utterances: int, concurrencies: list[int], hangover_manual_ms: int) -> None:
    settings = {
        "LINGUA_SESSION__HANGOVER_MANUAL_MS": str(hangover_manual_ms),
        "LINGUA_LOGGING__LEVEL": "INFO",  # the default; the e2e helper turns DEBUG on
        "LINGUA_LIMITS__SESSION_MESSAGES_PER_SECOND": "100000",  # see the module docstring
    }
    started = time.perf_counter()
    server = RedisServerProcess().start()
    prefix = f"bench{secrets.token_hex(3)}"
    replicas: list[Replica] = []
    echo: subprocess.Popen[bytes] | None = None
    try:
        echo, echo_url = start_echo_child()
        for name in ("bench-a", "bench-b"):
            replicas.append(Replica(server.url, name, prefix, dict(settings)).start())
        a, b = replicas
        assert server.pid is not None and a.proc is not None and b.proc is not None
        cpu = CpuMeter(
            {"replica A": [a.proc.pid], "replica B": [b.proc.pid], "redis-server": [server.pid]}
        )
        rows = anyio.run(
            run,
            a,
            b,
            echo_url,
            cpu,
            utterances,
            concurrencies,
            backend_options={"use_uvloop": True},
        )
    finally:
        if echo is not None:
            echo.terminate()
            echo.wait()
        for replica in replicas:
            replica.stop()
        server.stop()
    print_rows(rows)
    print(
        f"\nutterances per row: {utterances} (after {max(20, 3 * min(concurrencies))}+ warm-up); "
        f"one node per browser; hangover_manual_ms={hangover_manual_ms}; "
        f"{time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=300)
    parser.add_argument("--concurrency", type=concurrency_levels, default=[1, 8])
    parser.add_argument(
        "--hangover-manual-ms",
        type=int,
        default=0,
        help="session.hangover_manual_ms of the replicas (product default 200)",
    )
    ns = parser.parse_args()
    if ns.utterances < 100:
        parser.error("--utterances needs at least 100 (for p99)")
    main(ns.utterances, ns.concurrency, ns.hangover_manual_ms)
