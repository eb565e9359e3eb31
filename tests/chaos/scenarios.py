"""One chaos run: a cluster, steady traffic, one fault in the middle, the settle, the accounting.

:func:`run` is the whole run; :data:`SCENARIOS` names the faults. Each run writes its summary to
``var/chaos/<scenario>.json`` (``python -m tests.chaos.report`` renders them as the table of
docs/reliability.md) and keeps the replicas' logs in ``var/chaos/<scenario>/``.

Timeline: start Redis (AOF) and three replicas; connect the nodes, then the sessions; speak for
``warmup_s``; inject the fault (``fault_at``); keep speaking until ``fault_at + after_s``; the
clients finish the cut they are in and stop speaking (sockets stay open); settle: until every
job in Redis has ended, the inboxes are empty and nothing has happened for ``quiet_s`` (at most
``job_timeout_ms`` + 15 s: a job stuck until its deadline is then seen answered late, not lost);
read the slots; account.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from scheduler.config import SchedulingConfig
from tests.chaos import state
from tests.chaos.accounting import Accounting, Observations, account
from tests.chaos.cluster import OUT, ChaosReplica, Cluster
from tests.chaos.peers import ChaosClient, ChaosNode, Recorder, RoundRobin
from tests.e2e.daemons import ROOT

__all__ = ["LATENCY_LIMIT_S", "SCENARIOS", "Run", "Scenario", "run"]

# The acceptance: worst utterance latency <= 10 s with the default job timeout.
LATENCY_LIMIT_S = 10.0
JOB_TIMEOUT_S = 30.0  # scheduling.job_timeout_ms, default (kept)
PRESENCE_TTL_S = 6.0  # runtime.presence_ttl_ms, default (kept)
NODES = 6
# The real node never sends max_concurrent_jobs: each gets the default.
SLOTS = SchedulingConfig().default_max_concurrent_jobs
CLIENTS = 12
JOB_TIME_S = 1.2
LOAD = (
    f"3 replicas, {NODES} nodes ({SLOTS} slots, {JOB_TIME_S} s/job), {CLIENTS} sessions "
    "(manual cuts of 3-6 chunks, 0.4-1 s apart)"
)


@dataclass
class Run:
    """What a fault needs: the cluster, the peers, and a place to note what it did."""

    cluster: Cluster
    nodes: list[ChaosNode]
    clients: list[ChaosClient]
    notes: dict[str, Any] = field(default_factory=dict)
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)

    async def owners(self, kind: str = "node") -> Counter[str]:
        client = self.cluster.redis.client()
        try:
            return await anyio.to_thread.run_sync(
                state.node_owners, client, self.cluster.prefix, kind
            )
        finally:
            client.close()

    async def busiest(self) -> ChaosReplica:
        """The live replica holding the most nodes (then the most sessions)."""
        nodes, sessions = await self.owners("node"), await self.owners("session")
        live = [r for r in self.cluster.replicas if r.alive]
        chosen = max(
            live, key=lambda r: (nodes[r.instance_id], sessions[r.instance_id], r.instance_id)
        )
        self.notes["target"] = chosen.instance_id
        self.notes["target_held"] = {
            "nodes": nodes[chosen.instance_id],
            "sessions": sessions[chosen.instance_id],
        }
        return chosen


Fault = Callable[[Run], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault_name: str
    what_client_sees: str
    fault: Fault | None
    warmup_s: float = 6.0
    after_s: float = 18.0


# -- the faults ------------------------------------------------------------------------------


async def kill_9(run: Run) -> None:
    target = await run.busiest()
    target.signal(signal.SIGKILL)


async def sigstop_past_ttl(run: Run) -> None:
    target = await run.busiest()
    stopped_s = PRESENCE_TTL_S + 2.0
    target.signal(signal.SIGSTOP)
    run.notes["stopped_s"] = stopped_s
    await anyio.sleep(stopped_s)
    target.signal(signal.SIGCONT)


async def redis_restart(run: Run) -> None:
    down_s = 3.0
    run.notes["redis_down_s"] = down_s
    await anyio.to_thread.run_sync(run.cluster.redis.restart_after, down_s)


async def redis_pause(run: Run) -> None:
    # Past the TTL, so every presence looks lapsed; not longer, since an utterance cut as the
    # pause begins is answered only after it (pause + job time against the 10 s promise).
    paused_ms = int((PRESENCE_TTL_S + 1.0) * 1000)
    run.notes["paused_ms"] = paused_ms
    await anyio.to_thread.run_sync(run.cluster.redis.pause, paused_ms)
    await anyio.sleep(paused_ms / 1000)


async def node_flapping(run: Run) -> None:
    """Three rounds, 4 s apart: two nodes' sockets drop (no close frame); each reconnects after
    its 5 s, through the load balancer, so to another replica."""
    rng = random.Random(7)
    flaps = 0
    for _ in range(3):
        connected = [n for n in run.nodes if n.ws is not None]
        for node in rng.sample(connected, min(2, len(connected))):
            node.flap()
            flaps += 1
        await anyio.sleep(4.0)
    run.notes["flaps"] = flaps


async def sigterm_busy(run: Run) -> None:
    target = await run.busiest()
    started = time.monotonic()
    target.signal(signal.SIGTERM)

    async def wait_exit() -> None:
        assert target.proc is not None
        proc = target.proc
        run.notes["exit_code"] = await anyio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
        run.notes["drain_s"] = round(time.monotonic() - started, 2)

    run.background.append(wait_exit)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "baseline",
            "none (control run)",
            "every cut answered in about a second",
            None,
            warmup_s=6.0,
            after_s=10.0,
        ),
        Scenario(
            "kill9",
            "`kill -9` of the replica holding the most nodes",
            "sessions on it: the socket drops (1006), a new session after 1 s; others: answers",
            kill_9,
        ),
        Scenario(
            "sigstop",
            "SIGSTOP of the replica holding the most nodes for presence TTL + 2 s, then SIGCONT",
            "sessions on it: silence for 8 s, then its close code; others: answers",
            sigstop_past_ttl,
        ),
        Scenario(
            "redis_restart",
            "Redis stopped, down 3 s, started again on its AOF",
            "answers delayed or errors while Redis is down",
            redis_restart,
        ),
        Scenario(
            "redis_pause",
            "`CLIENT PAUSE 7000 ALL` (presence TTL + 1 s)",
            "answers delayed by the pause",
            redis_pause,
        ),
        Scenario(
            "node_flapping",
            "2 node sockets dropped every 4 s, 3 rounds (each node reconnects after 5 s)",
            "answers from the dropped nodes' jobs come from other nodes",
            node_flapping,
        ),
        Scenario(
            "sigterm",
            "SIGTERM of the replica holding the most nodes and sessions (graceful drain)",
            "sessions on it: close 1012, a new session after 1 s",
            sigterm_busy,
        ),
    ]
}


# -- the run ---------------------------------------------------------------------------------


async def run(
    scenario: Scenario,
    *,
    module: str = "scheduler",
    extra_env: dict[str, str] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` on a fresh cluster; the summary (also written to var/chaos/)."""
    name = name or scenario.name
    began = time.monotonic()
    cluster = await anyio.to_thread.run_sync(
        lambda: Cluster.start(name, module=module, extra_env=extra_env)
    )
    recorder = Recorder()
    node_lb, session_lb = RoundRobin(cluster.urls), RoundRobin(cluster.urls)
    nodes = [
        ChaosNode(node_lb, recorder, job_time_s=JOB_TIME_S, rng=random.Random(100 + i))
        for i in range(NODES)
    ]
    clients = [ChaosClient(i, session_lb, recorder, rng=random.Random(i)) for i in range(CLIENTS)]
    the_run = Run(cluster, nodes, clients)
    try:
        async with anyio.create_task_group() as tg:
            for node in nodes:
                tg.start_soon(node.run, tg)
            with anyio.fail_after(20):
                for node in nodes:
                    await node.registered.wait()
            for client in clients:
                tg.start_soon(client.run)
            with anyio.fail_after(20):
                for client in clients:
                    await client.started.wait()
            await anyio.sleep(scenario.warmup_s)
            fault_at = time.monotonic()
            the_run.notes["fault_at_abs"] = fault_at
            if scenario.fault is not None:
                await scenario.fault(the_run)
                for task in the_run.background:
                    tg.start_soon(task)
            the_run.notes["fault_s"] = round(time.monotonic() - fault_at, 2)
            await anyio.sleep(max(0.0, fault_at + scenario.after_s - time.monotonic()))
            for client in clients:
                client.speaking = False
            load_stopped = time.monotonic()
            settle_s = await _settle(cluster, recorder)
            slots = await _read(cluster, state.running_slots)
            pending = await _read(cluster, state.pending_messages)
            audit = await anyio.to_thread.run_sync(_audit, cluster)
            metrics = _metrics(cluster)
            recorder.closing = True
            tg.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(cluster.stop)
    accounting = account(
        Observations(
            cuts=recorder.cuts,
            results=recorder.results,
            errors=recorder.errors,
            jobs=recorder.jobs,
            closes=recorder.closes,
            running_slots=slots,
            fault_at=fault_at if scenario.fault is not None else None,
        )
    )
    summary = _summary(
        name, scenario, accounting, recorder, the_run, slots, pending, metrics,
        traffic_s=load_stopped - fault_at + scenario.warmup_s, settle_s=settle_s,
        run_s=time.monotonic() - began, module=module, audit=audit,
    )  # fmt: skip
    await anyio.to_thread.run_sync(_write, name, summary)
    return summary


def _write(name: str, summary: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    Path(OUT / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")


async def _read(cluster: Cluster, reader: Callable[..., Any]) -> Any:
    client = cluster.redis.client()
    try:
        return await anyio.to_thread.run_sync(reader, client, cluster.prefix)
    finally:
        client.close()


async def _settle(cluster: Cluster, recorder: Recorder, quiet_s: float = 3.0) -> float:
    """Wait until no job is active, the inboxes are empty and nothing happened for ``quiet_s``
    (bounded by the job timeout + 15 s); the seconds it took."""
    started = time.monotonic()
    limit = started + JOB_TIMEOUT_S + 15.0
    while time.monotonic() < limit:
        await anyio.sleep(0.5)
        try:
            active = await _read(cluster, state.active_jobs)
            pending = await _read(cluster, state.pending_messages)
        except Exception:  # Redis not answering (yet): not settled
            continue
        inboxes = sum(n for k, n in pending.items() if k != "dlq")
        quiet = time.monotonic() - recorder.last_activity >= quiet_s
        if active == 0 and inboxes == 0 and quiet:
            break
    return round(time.monotonic() - started, 2)


def _audit(cluster: Cluster) -> dict[str, Any]:
    """``lingua-scheduler audit --json`` against the cluster's Redis, as an operator runs it
    after an incident: its exit code (0 clean, 1 a violation) and the violated checks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUA_")}
    env.update(
        {
            "LINGUA_REDIS_URL": cluster.redis.url,
            "LINGUA_REDIS__KEY_PREFIX": cluster.prefix,
            "PYTHONPATH": str(ROOT),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "audit", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {}
    checks = report.get("checks", {}) if isinstance(report, dict) else {}
    violations = {
        name: check
        for name, check in checks.items()
        if isinstance(check, dict) and not check.get("ok", True)
    }
    return {
        "clean": done.returncode == 0 and report.get("ok") is True and not violations,
        "exit_code": done.returncode,
        "violations": violations,
        "stderr": done.stderr.decode(errors="replace")[-2000:],
    }


_METRICS = (
    "lingua_runtime_dropped_total",
    "lingua_runtime_dead_lettered_total",
    "lingua_runtime_takeovers_total",
    "lingua_jobs_total",
    "lingua_client_errors_total",
)


def _metrics(cluster: Cluster) -> dict[str, dict[str, float]]:
    """The counters that explain a failure, per live replica (label sets kept)."""
    out: dict[str, dict[str, float]] = {}
    for replica in cluster.replicas:
        if not replica.alive:
            continue
        try:
            text = replica.get("/metrics")[1].decode()
        except OSError:
            continue
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(_METRICS) and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                if "_created" not in key and float(value):
                    values[key] = float(value)
        out[replica.instance_id] = values
    return out


def _log_digest(cluster: Cluster, top: int = 8) -> dict[str, list[str]]:
    """The most frequent WARNING/ERROR messages of each replica's log."""
    out: dict[str, list[str]] = {}
    for replica in cluster.replicas:
        seen: Counter[str] = Counter()
        try:
            lines = Path(replica.log_path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                if "Error" in line or "Traceback" in line:
                    seen[line.strip()[:160]] += 1
                continue
            if record.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                seen[f"{record['level']} {record.get('msg', '')[:140]}"] += 1
        out[replica.instance_id] = [f"{n}x {msg}" for msg, n in seen.most_common(top)]
    return out


def _summary(
    name: str,
    scenario: Scenario,
    accounting: Accounting,
    recorder: Recorder,
    the_run: Run,
    slots: dict[str, int],
    pending: dict[str, int],
    metrics: dict[str, dict[str, float]],
    *,
    traffic_s: float,
    settle_s: float,
    run_s: float,
    module: str,
    audit: dict[str, Any],
) -> dict[str, Any]:
    numbers = {k: v for k, v in asdict(accounting).items() if k != "outcomes"}
    notes = dict(the_run.notes)
    fault_at = notes.pop("fault_at_abs", None)
    broken = accounting.promise_broken(LATENCY_LIMIT_S)
    if not audit["clean"]:
        broken.append(f"audit not clean after the settle: {audit['violations']}")
    return {
        "scenario": name,
        "fault": scenario.fault_name,
        "load": LOAD,
        "build": module,
        "command": f".venv/bin/python -m pytest tests/chaos -k {name}",
        "client_sees": scenario.what_client_sees,
        "config": "defaults (job_timeout_ms 30000, presence_ttl_ms 6000, node_ttl_ms 45000)",
        "promise_holds": not broken,
        "audit_clean": audit["clean"],
        "broken": broken,
        **numbers,
        "traffic_s": round(traffic_s, 1),
        "settle_s": settle_s,
        "run_s": round(run_s, 1),
        "fault_notes": notes,
        "node_close_codes": dict(recorder.node_closes),
        "session_close_codes": dict(recorder.session_closes),
        "error_frames": dict(recorder.error_frames),
        "error_examples": recorder.error_examples,
        "node_discarded_results": recorder.discarded_results,
        "node_suppressed_results": recorder.suppressed_results,
        "job_cancels": recorder.cancels,
        "slots_after_settle": {k: v for k, v in slots.items() if v},
        "pending_after_settle": pending,
        "audit": audit,
        "metrics": metrics,
        "log_digest": _log_digest(the_run.cluster),
        "bad_cut_traces": _traces(accounting, recorder, fault_at),
    }


def _traces(accounting: Accounting, recorder: Recorder, fault_at: float | None) -> list[str]:
    """What happened to the worst cuts (lost first, then the slowest), times from the fault."""
    zero = fault_at or 0.0
    bad = [o for o in accounting.outcomes if o.status == "lost"]
    bad += sorted(
        (o for o in accounting.outcomes if o.status != "lost" and (o.latency_s or 0) > 3.0),
        key=lambda o: -(o.latency_s or 0),
    )
    cuts = {(c.client, c.number): c for c in recorder.cuts}
    out = []
    for o in bad[:6]:
        c = cuts[(o.client, o.number)]
        mine = set(c.chunks)
        lines = [
            f"client {o.client} cut {o.number} [{o.status}, latency {o.latency_s}] session "
            f"{c.session_id} chunks {c.chunks}: is_final at {c.finished_at - zero:+.2f}"
        ]
        jobs = {j.job_id for j in recorder.jobs if mine & set(j.chunks)}
        for j in recorder.jobs:
            if j.job_id in jobs and mine & set(j.chunks):
                lines.append(
                    f"  {j.at - zero:+.2f} job {j.job_id} attempt {j.attempt} -> {j.node_id} "
                    f"(utterance {j.utterance_index}, chunks {j.chunks})"
                )
        for at, job_id, node, what in recorder.job_events:
            if job_id in jobs and not what.startswith("assign"):
                lines.append(f"  {at - zero:+.2f} {node}: {what} for {job_id}")
        for r in recorder.results:
            if mine & set(r.chunks):
                lines.append(
                    f"  {r.at - zero:+.2f} translation_result {r.job_id} chunks {r.chunks}"
                )
        for e in recorder.errors:
            if e.session_id == c.session_id:
                lines.append(f"  {e.at - zero:+.2f} error {e.code} utterance {e.utterance_index}")
        for closed in recorder.closes:
            if closed.session_id == c.session_id:
                lines.append(f"  {closed.at - zero:+.2f} session socket closed {closed.code}")
        out.append("\n".join(lines))
    return out
