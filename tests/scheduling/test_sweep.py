"""sweep: timeouts and failover, dead nodes, expiry of records; exactly-once claims."""

from __future__ import annotations

import anyio
import pytest

from scheduler.config import SchedulingConfig
from scheduler.scheduling import JobFinished, SchedulingCore
from tests.scheduling.conftest import T0, caps, req

pytestmark = pytest.mark.anyio


async def test_timeout_reassigns_then_fails_after_max_attempts(core: SchedulingCore) -> None:
    cfg = core.config
    for node in ("a", "b", "c", "d"):
        await core.register_node(node, caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    now, seen = T0, [job.node_id]
    for attempt in range(2, cfg.max_attempts + 1):
        now += cfg.job_timeout_ms
        for node in ("a", "b", "c", "d"):  # keep every node alive across the clock jump
            reg = {n.node_id: n.generation for n in await core.list_nodes()}[node]
            await core.heartbeat(node, reg, now_ms=now)
        [action] = (await core.sweep(now_ms=now)).actions
        assert (action.cause, action.outcome, action.attempt) == ("timeout", "reassigned", attempt)
        assert action.old_node == seen[-1] and action.new_node not in seen
        seen.append(action.new_node)
    now += cfg.job_timeout_ms
    for node in ("a", "b", "c", "d"):
        reg = {n.node_id: n.generation for n in await core.list_nodes()}[node]
        await core.heartbeat(node, reg, now_ms=now)
    [action] = (await core.sweep(now_ms=now)).actions
    assert (action.outcome, action.error, action.new_node) == ("failed", "MAX_ATTEMPTS", None)
    [info] = await core.list_jobs()
    assert (info.state, info.tried) == ("failed", seen)
    assert all(n.running == 0 for n in await core.list_nodes())


async def test_dead_node_goes_offline_and_its_jobs_move(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    late = T0 + core.config.node_ttl_ms // 2
    b = await core.register_node("b", caps(), now_ms=late)
    report = await core.sweep(now_ms=T0 + core.config.node_ttl_ms + 1)
    assert report.offline_nodes == ["a"]
    [action] = report.actions
    assert (action.job_id, action.cause, action.new_node) == (job.job_id, "node_offline", "b")
    assert [(n.node_id, n.running, n.generation) for n in await core.list_nodes()] == [
        ("b", 1, b.generation)
    ]


async def test_expired_records_are_removed(core: SchedulingCore) -> None:
    cfg = core.config
    reg = await core.register_node("a", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 1)
    now = T0 + 1 + cfg.job_retention_ms
    await core.heartbeat("a", reg.generation, now_ms=now)
    report = await core.sweep(now_ms=now)
    assert report.removed_jobs == 1
    assert await core.list_jobs() == []
    # the idempotency entry went with the record: the same key makes a new job now; the node
    # that had the utterance is still avoided (sent marks outlive job records)
    await core.register_node("b", caps(), now_ms=now)
    again = await core.dispatch(req(), now_ms=now)
    assert again.created and again.job_id != job.job_id and again.node_id == "b"
    later = T0 + cfg.sent_retention_ms + 1
    await core.heartbeat("a", reg.generation, now_ms=later)
    report = await core.sweep(now_ms=later)
    assert report.removed_sent >= 1 and report.removed_sessions == 1


async def test_concurrent_sweeps_handle_each_timeout_once(
    core: SchedulingCore, client_factory, key_prefix: str
) -> None:  # type: ignore[no-untyped-def]
    for node in ("a", "b"):
        await core.register_node(node, caps(slots=20), now_ms=T0)
    jobs = [await core.dispatch(req(f"s{i}"), now_ms=T0) for i in range(20)]
    now = T0 + core.config.job_timeout_ms
    clients = [client_factory() for _ in range(4)]
    cores = [SchedulingCore(c, core.config, key_prefix=key_prefix) for c in clients]
    handled: list[str] = []

    async def sweeper(c: SchedulingCore) -> None:
        handled.extend(a.job_id for a in (await c.sweep(now_ms=now)).actions)

    try:
        async with anyio.create_task_group() as tg:
            for c in cores:
                tg.start_soon(sweeper, c)
    finally:
        for c in clients:
            await c.aclose()
    assert sorted(handled) == sorted(j.job_id for j in jobs)
    assert sum(n.running for n in await core.list_nodes()) == 20


async def test_batches_are_bounded(core: SchedulingCore) -> None:
    core = SchedulingCore(
        core.client, SchedulingConfig(sweep_batch=3), key_prefix=core.keys.key_prefix
    )
    await core.register_node("a", caps(slots=10), now_ms=T0)
    await core.register_node("b", caps(slots=10), now_ms=T0)
    for i in range(5):
        await core.dispatch(req(f"s{i}"), now_ms=T0)
    now = T0 + core.config.job_timeout_ms
    first = await core.sweep(now_ms=now)
    assert (len(first.actions), first.more) == (3, True)
    second = await core.sweep(now_ms=now)
    assert (len(second.actions), second.more) == (2, False)


async def test_dead_nodes_leave_within_a_pool_member_budget(core: SchedulingCore) -> None:
    core = SchedulingCore(
        core.client, SchedulingConfig(sweep_pool_members=5), key_prefix=core.keys.key_prefix
    )
    four_pairs = caps(("en", "zh"), ("en", "zh"))
    for node in ("a", "b", "c"):
        await core.register_node(node, four_pairs, now_ms=T0)
    later = T0 + core.config.node_ttl_ms + 1
    # a and b (8 members) reach the budget of 5; c waits for the next call
    first = await core.sweep(now_ms=later)
    assert (first.offline_nodes, first.more) == (["a", "b"], True)
    second = await core.sweep(now_ms=later)
    assert (second.offline_nodes, second.more) == (["c"], False)
    assert await core.list_nodes() == []
    assert await core.client.zcard(core.keys.key("pools")) == 0


async def _server_ms(core: SchedulingCore) -> int:
    seconds, micros = await core.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_deadlines_that_lapsed_in_a_stall_get_the_grace_instead_of_a_redo(
    core: SchedulingCore,
) -> None:
    """No sweep ran for longer than stall_ms (Redis was away): a job whose deadline passed in
    that gap is not failed over (its result may be queued on a replica), its deadline and its
    node's liveness move to now + stall_grace_ms; after the grace the sweep enforces them."""
    cfg = core.config
    reg = await core.register_node("a", caps(), now_ms=T0)
    await core.register_node("b", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    await core.sweep(now_ms=T0)  # the clock starts
    clock = core.keys.key("sweep_clock")
    gap = cfg.node_ttl_ms + cfg.job_timeout_ms
    await core.client.set(clock, await _server_ms(core) - gap)  # nothing swept for `gap`
    now = T0 + gap - 1
    report = await core.sweep(now_ms=now)
    assert report.actions == [] and report.offline_nodes == []
    assert (report.stalled_jobs, report.stalled_nodes) == (1, 2)
    completion = await core.complete(job.job_id, job.node_id, 1, ok=True, now_ms=now + 1)
    assert completion.session_id == "s1" and not completion.replayed
    assert all(n.running == 0 for n in await core.list_nodes())
    # liveness got the grace only: a node silent past it goes offline
    await core.heartbeat("a", reg.generation, now_ms=now + cfg.stall_grace_ms)
    report = await core.sweep(now_ms=now + cfg.stall_grace_ms + 1)
    assert report.offline_nodes == ["b"] and report.stalled_jobs == 0


async def test_a_deadline_that_lapsed_without_a_stall_fails_over(core: SchedulingCore) -> None:
    """Sweeps ran all along (no gap): the lapsed deadline is enforced as before."""
    cfg = core.config
    for node in ("a", "b"):
        await core.register_node(node, caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    await core.sweep(now_ms=T0)
    now = T0 + cfg.job_timeout_ms
    for node in ("a", "b"):
        reg = {n.node_id: n.generation for n in await core.list_nodes()}[node]
        await core.heartbeat(node, reg, now_ms=now)
    [action] = (await core.sweep(now_ms=now)).actions
    assert (action.job_id, action.cause, action.outcome) == (job.job_id, "timeout", "reassigned")


async def test_a_result_after_the_job_failed_at_its_deadline_is_refused_not_replayed(
    core: SchedulingCore,
) -> None:
    """The job failed (JOB_TIMEOUT, the client told): a late result of its node is no replay of
    an earlier completion (a caller that retried would forward a replay: the client would get
    an answer after its error)."""
    reg = await core.register_node("a", caps(), now_ms=T0)  # the only node: no move possible
    job = await core.dispatch(req(), now_ms=T0)
    now = T0 + core.config.job_timeout_ms
    await core.heartbeat("a", reg.generation, now_ms=now)
    [action] = (await core.sweep(now_ms=now)).actions
    assert action.outcome == "failed"
    with pytest.raises(JobFinished):
        await core.complete(job.job_id, "a", 1, ok=True, now_ms=now + 1)
