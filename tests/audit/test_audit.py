"""``lingua-scheduler audit`` against a real Redis: a clean state after real dispatches and
completions audits clean; each violation, introduced on purpose, is found and named; the
periodic run exports it; an unreachable Redis is exit 3 in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from cross_instance.keys import RuntimeKeys
from cross_instance.presence import server_ms
from cross_instance.redis_client import AnyRedis, connect
from cross_instance.redis_server import free_port
from scheduler.audit import CHECKS, Auditor, audit_forever
from scheduler.cli import main
from scheduler.config import Config, load_config
from scheduler.metrics import AuditMetrics
from scheduler.scheduling import DispatchRequest, NodeCapabilities, SchedulingCore
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
MINUTE_MS = 60_000


class Cluster:
    """One deployment's Redis state under a private key prefix, driven through the real core."""

    def __init__(self, redis_url: str, key_prefix: str, **env: str) -> None:
        self.env = {
            "LINGUA_REDIS_URL": redis_url,
            "LINGUA_REDIS__KEY_PREFIX": key_prefix,
            **env,
        }
        self.config: Config = load_config(environ=self.env)
        self.keys = RuntimeKeys(key_prefix)

    def run(self, action: Callable[[AnyRedis, SchedulingCore], Awaitable[Any]]) -> Any:
        async def go() -> Any:
            client = connect(self.config.redis)
            try:
                core = SchedulingCore(
                    client, self.config.scheduling, key_prefix=self.config.redis.key_prefix
                )
                return await action(client, core)
            finally:
                await client.aclose()

        return anyio.run(go)

    def audit(self, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, Any]:
        """``audit --json`` in process: exit code and the parsed document."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            code = main(["audit", "--json", *extra])
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        out = capsys.readouterr().out
        return code, json.loads(out)


@pytest.fixture
def cluster(redis_url: str, key_prefix: str) -> Iterator[Cluster]:
    made = Cluster(redis_url, key_prefix, LINGUA_AUDIT__PAGE_SIZE="1")
    yield made

    async def clean(client: AnyRedis, core: SchedulingCore) -> None:
        async for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
            await client.delete(key)

    made.run(clean)


def _caps() -> NodeCapabilities:
    return NodeCapabilities(asr=["en"], semantic=["zh"], max_concurrent_jobs=2)


def _request(session: str, index: int) -> DispatchRequest:
    return DispatchRequest(
        session_id=session, utterance_index=index, src_lang="en", tgt_lang="zh",
        turn_id="t1", reason="manual", payload='{"type":"job_assign"}',
    )  # fmt: skip


async def _two_nodes_one_job_done_one_running(client: AnyRedis, core: SchedulingCore) -> str:
    """n1 and n2 registered; one job completed, one still running: the job id running."""
    await core.register_node("n1", _caps())
    await core.register_node("n2", _caps())
    done = await core.dispatch(_request("s1", 0))
    await core.complete(done.job_id, done.node_id, done.attempt, ok=True)
    running = await core.dispatch(_request("s2", 0))
    return running.job_id


def _violated(report: Any) -> set[str]:
    return {name for name, check in report["checks"].items() if not check["ok"]}


def test_a_clean_state_after_dispatch_and_complete_audits_clean(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.run(_two_nodes_one_job_done_one_running)
    code, report = cluster.audit(capsys)
    assert code == 0, report
    assert report["ok"] is True
    assert list(report["checks"]) == list(CHECKS)
    assert all(c == {"ok": True, "count": 0, "examples": []} for c in report["checks"].values())
    assert report["dlq"] == {"depth": 0, "oldest_age_ms": 0}


def test_a_job_waiting_for_a_slot_audits_clean(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job waiting for a slot (every node of its pair busy) holds no slot and has no node by
    design: it is no violation."""

    async def fill(client: AnyRedis, core: SchedulingCore) -> str:
        await core.register_node(
            "n1", NodeCapabilities(asr=["en"], semantic=["zh"], max_concurrent_jobs=1)
        )
        await core.dispatch(_request("s1", 0))
        waiting = await core.dispatch(_request("s2", 0))
        record = msgspec.json.decode(await client.hget(core.keys.key("jobs"), waiting.job_id))
        assert record["state"] == "waiting"
        return waiting.job_id

    cluster.run(fill)
    code, report = cluster.audit(capsys)
    assert code == 0, report


def test_a_leaked_slot_is_found(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    async def leak(client: AnyRedis, core: SchedulingCore) -> None:
        await _two_nodes_one_job_done_one_running(client, core)
        await client.hincrby(core.keys.key("node_running"), "n2", 1)

    cluster.run(leak)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"slots"}
    [example] = report["checks"]["slots"]["examples"]
    assert example["node"] == "n2" and example["running"] == example["active_jobs"] + 1
    assert "slots reserved but" in example["reason"]


def test_an_active_job_that_holds_no_slot_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    async def unindex(client: AnyRedis, core: SchedulingCore) -> str:
        job = await _two_nodes_one_job_done_one_running(client, core)
        node = msgspec.json.decode(await client.hget(core.keys.key("jobs"), job))["node"]
        await client.zrem(core.keys.key("node_jobs"), f"{node}\0{job}")
        await client.hincrby(core.keys.key("node_running"), node, -1)
        await client.sadd(core.keys.key("node_free"), node)
        return job

    job = cluster.run(unindex)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"job_index"}
    [example] = report["checks"]["job_index"]["examples"]
    assert example["job"] == job and "holds no slot" in example["reason"]


def test_a_slot_held_by_a_finished_job_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    async def stale_member(client: AnyRedis, core: SchedulingCore) -> None:
        await _two_nodes_one_job_done_one_running(client, core)
        await client.zadd(core.keys.key("node_jobs"), {"n1\0gone-job": 0})
        running = await client.hincrby(core.keys.key("node_running"), "n1", 1)
        if running >= int(await client.hget(core.keys.key("node_slots"), "n1")):
            await client.srem(core.keys.key("node_free"), "n1")  # node_free stays in step

    cluster.run(stale_member)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"job_index"}
    [example] = report["checks"]["job_index"]["examples"]
    assert (example["job"], example["node"]) == ("gone-job", "n1")
    assert "job record is gone" in example["reason"]


def test_a_job_on_a_node_that_is_gone_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    async def remove_node(client: AnyRedis, core: SchedulingCore) -> str:
        job = await _two_nodes_one_job_done_one_running(client, core)
        record = msgspec.json.decode(await client.hget(core.keys.key("jobs"), job))
        await client.hdel(core.keys.key("nodes"), record["node"])
        return str(record["node"])

    node = cluster.run(remove_node)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert "dead_node_jobs" in _violated(report)
    [example] = report["checks"]["dead_node_jobs"]["examples"]
    assert example["node"] == node and "not registered" in example["reason"]


async def _a_job_held_for_its_offline_node(client: AnyRedis, core: SchedulingCore) -> str:
    """n3 alone serves en→ja; it goes offline while it works on a job no other node can take:
    the job stays on it (held), with its slot, for the node's result after a reconnect."""
    await _two_nodes_one_job_done_one_running(client, core)
    now = await server_ms(client)
    n3 = await core.register_node(
        "n3", NodeCapabilities(asr=["en"], semantic=["ja"], max_concurrent_jobs=2), now_ms=now
    )
    request = msgspec.structs.replace(_request("s3", 0), tgt_lang="ja")
    job = await core.dispatch(request, now_ms=now)
    [held] = (await core.node_offline("n3", n3.generation, now_ms=now)).actions
    assert (held.outcome, held.old_node) == ("held", "n3")
    return job.job_id


def test_a_job_held_for_its_offline_node_audits_clean(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """A held job is active on a node with no record, no liveness and no node_slots, and keeps
    a running count there: legitimate until its deadline (issue 11, includes/away.lua)."""

    async def hold(client: AnyRedis, core: SchedulingCore) -> None:
        await _a_job_held_for_its_offline_node(client, core)
        k = core.keys.key
        assert await client.hget(k("nodes"), "n3") is None
        assert await client.hget(k("node_running"), "n3") == "1"
        assert not await client.sismember(k("node_free"), "n3")

    cluster.run(hold)
    code, report = cluster.audit(capsys)
    assert code == 0, report


def test_a_held_job_past_its_deadline_or_a_gone_node_in_node_free_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    grace = cluster.config.audit.grace_ms

    async def overdue(client: AnyRedis, core: SchedulingCore) -> str:
        job = await _a_job_held_for_its_offline_node(client, core)
        now = await server_ms(client)
        # the sweeper never came: the held job's deadline is long past
        await client.zadd(core.keys.key("deadlines"), {job: now - grace - 10 * MINUTE_MS})
        # and the gone node's held slot put it in node_free (a leak selection would use)
        await client.sadd(core.keys.key("node_free"), "n3")
        return job

    job = cluster.run(overdue)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"overdue_jobs", "slots"}
    [late] = report["checks"]["overdue_jobs"]["examples"]
    assert late["job"] == job and "deadline passed" in late["reason"]
    [free] = report["checks"]["slots"]["examples"]
    assert free["node"] == "n3" and "in node_free" in free["reason"]


def test_an_unmarked_job_on_a_gone_node_with_a_count_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without held_since in its record the same state is a leak: both checks name it."""

    async def unmark(client: AnyRedis, core: SchedulingCore) -> None:
        job = await _a_job_held_for_its_offline_node(client, core)
        record = msgspec.json.decode(await client.hget(core.keys.key("jobs"), job))
        del record["held_since"]
        await client.hset(core.keys.key("jobs"), job, msgspec.json.encode(record))

    cluster.run(unmark)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"dead_node_jobs", "slots"}
    assert "not registered" in report["checks"]["dead_node_jobs"]["examples"][0]["reason"]


def test_a_job_on_a_node_whose_liveness_lapsed_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    async def lapse(client: AnyRedis, core: SchedulingCore) -> None:
        job = await _two_nodes_one_job_done_one_running(client, core)
        record = msgspec.json.decode(await client.hget(core.keys.key("jobs"), job))
        now = await server_ms(client)
        await client.zadd(core.keys.key("node_alive"), {record["node"]: now - 10 * MINUTE_MS})

    cluster.run(lapse)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"dead_node_jobs"}
    assert "lapsed" in report["checks"]["dead_node_jobs"]["examples"][0]["reason"]


def test_a_job_ten_minutes_past_its_deadline_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    timeout = cluster.config.scheduling.job_timeout_ms

    async def overdue(client: AnyRedis, core: SchedulingCore) -> str:
        await _two_nodes_one_job_done_one_running(client, core)
        now = await server_ms(client)
        late = await core.dispatch(_request("s3", 0), now_ms=now - 10 * MINUTE_MS - timeout)
        return late.job_id

    job = cluster.run(overdue)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"overdue_jobs"}
    [example] = report["checks"]["overdue_jobs"]["examples"]
    assert example["job"] == job and "deadline passed" in example["reason"]


def test_a_job_of_an_ended_session_is_no_violation_in_flight_nor_once_failed(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    # After end_session the job keeps its slot until its deadline (the ended mark keeps it from
    # moving), then the sweep fails it quietly: neither state is a leak.
    async def end_in_flight(client: AnyRedis, core: SchedulingCore) -> tuple[str, int]:
        await _two_nodes_one_job_done_one_running(client, core)
        job = await core.dispatch(_request("s3", 0))
        assert await core.end_session("s3")
        return job.job_id, job.deadline_ms

    job, deadline = cluster.run(end_in_flight)
    code, report = cluster.audit(capsys)
    assert code == 0, report

    async def past_its_deadline(client: AnyRedis, core: SchedulingCore) -> list[Any]:
        for node in await core.list_nodes():
            await core.heartbeat(node.node_id, node.generation, now_ms=deadline)
        return (await core.sweep(now_ms=deadline)).actions

    actions = cluster.run(past_its_deadline)
    assert [(a.job_id, a.outcome, a.error) for a in actions if a.job_id == job] == [
        (job, "failed", "SESSION_ENDED")
    ]
    code, report = cluster.audit(capsys)
    assert code == 0, report


def test_an_owner_entry_of_a_dead_token_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    async def orphan(client: AnyRedis, core: SchedulingCore) -> None:
        await _two_nodes_one_job_done_one_running(client, core)
        await client.hset(cluster.keys.owners("session"), "s9", "gone-replica@1")

    cluster.run(orphan)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"dead_owners"}
    [example] = report["checks"]["dead_owners"]["examples"]
    assert (example["kind"], example["id"], example["owner"]) == ("session", "s9", "gone-replica@1")


def test_an_old_pending_inbox_entry_is_found(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "r1@1"

    async def stuck(client: AnyRedis, core: SchedulingCore) -> str:
        now = await server_ms(client)
        stream = cluster.keys.inbox(token)
        await client.hset(cluster.keys.rt("inboxes"), token, "live")
        old = await client.xadd(stream, {"env": "{}"}, id=f"{now - 10 * MINUTE_MS}-0")
        await client.xadd(stream, {"env": "{}"})  # a fresh entry is no violation
        return str(old)

    entry = cluster.run(stuck)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"stuck_inbox"}
    check = report["checks"]["stuck_inbox"]
    assert check["count"] == 1
    assert (check["examples"][0]["inbox"], check["examples"][0]["entry_id"]) == (token, entry)


def test_a_dead_letter_is_found_with_its_age(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    async def dead(client: AnyRedis, core: SchedulingCore) -> None:
        now = await server_ms(client)
        body = {"reason": "no_owner", "envelope": {"target_kind": "session", "target_id": "s1"}}
        await client.xadd(
            cluster.keys.dlq(), {"mid": "m1", "dead": json.dumps(body)}, id=f"{now - MINUTE_MS}-0"
        )

    cluster.run(dead)
    code, report = cluster.audit(capsys)
    assert code == 1
    assert _violated(report) == {"dlq"}
    assert report["checks"]["dlq"]["count"] == 1 == report["dlq"]["depth"]
    assert report["dlq"]["oldest_age_ms"] >= MINUTE_MS
    assert report["checks"]["dlq"]["examples"][0]["target"] == "session:s1"


def test_the_periodic_run_exports_every_check(cluster: Cluster) -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)

    def violations(check: str) -> float | None:
        return registry.get_sample_value("lingua_audit_violations", {"check": check})

    assert [violations(c) for c in CHECKS] == [0.0] * len(CHECKS)

    async def leak_and_audit(client: AnyRedis, core: SchedulingCore) -> None:
        await _two_nodes_one_job_done_one_running(client, core)
        await client.hincrby(core.keys.key("node_running"), "n1", 2)
        await client.hset(cluster.keys.owners("node"), "n1", "gone-replica@1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(audit_forever, Auditor(client, cluster.config), metrics, 100)
            await until(lambda: violations("slots") == 1.0)
            tg.cancel_scope.cancel()

    cluster.run(leak_and_audit)
    assert violations("dead_owners") == 1.0
    assert [violations(c) for c in CHECKS if c not in ("slots", "dead_owners")] == [0.0] * 5
    assert registry.get_sample_value("lingua_audit_runs_total", {"outcome": "violations"})
    assert registry.get_sample_value("lingua_audit_dlq_depth") == 0.0


def test_violations_are_exit_1_with_a_table_from_a_real_process(cluster: Cluster) -> None:
    cluster.run(
        lambda client, core: client.hset(cluster.keys.owners("node"), "n7", "gone-replica@1")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUA_")}
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "audit"],
        env={**env, **cluster.env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "COUNT", "EXAMPLES"]
    row = next(line.split() for line in lines if line.startswith("dead_owners"))
    assert row[:4] == ["dead_owners", "VIOLATION", "1", "node"]
    assert any(line.startswith("dead_owners: node n7: owned by gone-replica@1") for line in lines)


def test_an_unreachable_redis_is_exit_3_in_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUA_")}
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "audit", "--json"],
        env={**env, "LINGUA_REDIS_URL": url, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"lingua-scheduler: cannot reach Redis at {url}")


def test_jobs_finishing_during_the_audit_are_no_violation(cluster: Cluster) -> None:
    """Dispatches and completions run while the audit pages (one node or job per page): the
    per-page scripts read each node's facts at one instant, so no run sees a leak."""

    async def traffic_and_audits(client: AnyRedis, core: SchedulingCore) -> list[Any]:
        for node in ("n1", "n2", "n3"):
            await core.register_node(node, _caps())
        auditor = Auditor(client, cluster.config)
        reports: list[Any] = []
        done = anyio.Event()

        async def traffic() -> None:
            for index in range(150):
                placed = [await core.dispatch(_request(f"s{k}", index)) for k in range(3)]
                for job in placed:
                    await core.complete(job.job_id, job.node_id, job.attempt, ok=True)
            done.set()

        async def audits() -> None:
            while not done.is_set():
                reports.append(await auditor.run())

        async with anyio.create_task_group() as tg:
            tg.start_soon(traffic)
            tg.start_soon(audits)
        return reports

    reports = cluster.run(traffic_and_audits)
    assert len(reports) >= 3
    assert [r.to_builtins() for r in reports if not r.ok] == []


@pytest.mark.cluster
@pytest.mark.anyio
async def test_the_audit_runs_on_redis_cluster(cluster_redis: AnyRedis, key_prefix: str) -> None:
    """Each audit script touches one slot: the audit works on Redis Cluster as on one server."""
    config = load_config(environ={"LINGUA_REDIS__KEY_PREFIX": key_prefix})
    core = SchedulingCore(cluster_redis, config.scheduling, key_prefix=key_prefix)
    try:
        await _two_nodes_one_job_done_one_running(cluster_redis, core)
        auditor = Auditor(cluster_redis, config)
        assert (await auditor.run()).ok
        await cluster_redis.hincrby(core.keys.key("node_running"), "n1", 1)
        report = await auditor.run()
        assert [n for n, r in report.checks.items() if not r.ok] == ["slots"]
    finally:
        await cluster_redis.delete(*core.keys.all())
