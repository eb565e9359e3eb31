"""dispatch_job, ack_job, start_job, complete_job, end_session: contracts and fencing."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from scheduler.scheduling import (
    AllNodesFull,
    ForeignNode,
    InvalidInput,
    JobFinished,
    JobHolder,
    JobNotFound,
    NoLiveNode,
    NoPool,
    SchedulingCore,
    StaleAttempt,
)
from tests.scheduling.conftest import T0, caps, req

pytestmark = pytest.mark.anyio


async def running(core: SchedulingCore) -> dict[str, int]:
    return {n.node_id: n.running for n in await core.list_nodes()}


async def test_dispatch_picks_least_loaded_and_reserves(core: SchedulingCore) -> None:
    for node in ("a", "b", "c"):
        await core.register_node(node, caps(slots=4), now_ms=T0)
    placed = [(await core.dispatch(req(f"s{i}"), now_ms=T0)).node_id for i in range(6)]
    # ties break by node id; each placement raises that node's load
    assert placed == ["a", "b", "c", "a", "b", "c"]
    assert await running(core) == {"a": 2, "b": 2, "c": 2}
    assert {p.load_permille for p in await core.list_pools()} == {500}
    [job, *_] = await core.list_jobs()
    assert (job.attempt, job.state, job.deadline_ms) == (
        1,
        "dispatched",
        T0 + core.config.job_timeout_ms,
    )


async def test_dispatch_is_idempotent(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=4), now_ms=T0)
    first = await core.dispatch(req(), now_ms=T0)
    again = await core.dispatch(req(), now_ms=T0 + 5)
    assert first.created and not again.created
    assert again.job_id == first.job_id and again.node_id == first.node_id
    assert await running(core) == {"a": 1}


async def test_concurrent_duplicates_make_one_job(
    core: SchedulingCore, client_factory, key_prefix: str
) -> None:  # type: ignore[no-untyped-def]
    await core.register_node("a", caps(slots=8), now_ms=T0)
    await core.register_node("b", caps(slots=8), now_ms=T0)
    clients = [client_factory() for _ in range(4)]
    cores = [SchedulingCore(c, core.config, key_prefix=key_prefix) for c in clients]
    results = []

    async def one(i: int) -> None:
        results.append(await cores[i % len(cores)].dispatch(req(), now_ms=T0))

    try:
        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(one, i)
    finally:
        for c in clients:
            await c.aclose()
    assert len({r.job_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert sum((await running(core)).values()) == 1
    assert len(await core.list_jobs()) == 1


async def test_no_pool(core: SchedulingCore) -> None:
    await core.register_node("a", caps(("en",), ("zh",)), now_ms=T0)
    with pytest.raises(NoPool):
        await core.dispatch(req(tgt="ja"), now_ms=T0)
    assert await core.list_jobs() == []


async def test_all_full(core: SchedulingCore) -> None:
    # with waiting switched off (slot_wait_max = 0): a full pool refuses at once
    config = msgspec.structs.replace(core.config, slot_wait_max=0)
    no_wait = SchedulingCore(core.client, config, key_prefix=core.keys.key_prefix)
    await no_wait.register_node("a", caps(slots=1), now_ms=T0)
    await no_wait.dispatch(req("s1"), now_ms=T0)
    with pytest.raises(AllNodesFull):
        await no_wait.dispatch(req("s2"), now_ms=T0)
    assert await running(core) == {"a": 1}
    assert len(await core.list_jobs()) == 1


async def test_no_live_node_then_no_pool(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    later = T0 + core.config.node_ttl_ms + 1
    with pytest.raises(NoLiveNode):
        await core.dispatch(req(), now_ms=later)
    # the dead node left the pools lazily; its record waits for the sweeper
    with pytest.raises(NoPool):
        await core.dispatch(req(), now_ms=later)
    [node] = await core.list_nodes()
    assert not node.in_pools


async def test_heartbeat_before_sweep_rejoins(core: SchedulingCore) -> None:
    reg = await core.register_node("a", caps(), now_ms=T0)
    later = T0 + core.config.node_ttl_ms + 1
    with pytest.raises(NoLiveNode):
        await core.dispatch(req(), now_ms=later)
    ack = await core.heartbeat("a", reg.generation, now_ms=later)
    assert ack.moved
    assert (await core.dispatch(req(), now_ms=later)).node_id == "a"


async def test_exclude_list(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    await core.register_node("b", caps(), now_ms=T0)
    assert (await core.dispatch(req(exclude=("a",)), now_ms=T0)).node_id == "b"
    with pytest.raises(AllNodesFull):
        await core.dispatch(req("s2", exclude=("a", "b")), now_ms=T0)


async def test_never_two_jobs_of_one_utterance_on_a_node(core: SchedulingCore) -> None:
    await core.register_node("a", caps(("en",), ("zh", "ja"), 4), now_ms=T0)
    job = await core.dispatch(req(tgt="zh"), now_ms=T0)
    with pytest.raises(AllNodesFull):
        await core.dispatch(req(tgt="ja"), now_ms=T0)
    # not even after the first one finished: the node refuses the pair forever
    await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 1)
    with pytest.raises(AllNodesFull):
        await core.dispatch(req(tgt="ja"), now_ms=T0 + 2)
    await core.register_node("b", caps(("en",), ("zh", "ja"), 4), now_ms=T0)
    assert (await core.dispatch(req(tgt="ja"), now_ms=T0 + 3)).node_id == "b"


async def test_session_affinity(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=4), now_ms=T0)
    await core.register_node("b", caps(slots=4), now_ms=T0)
    await core.dispatch(req("s1", 0), now_ms=T0)  # a
    # a is now busier than b, yet the session stays on a
    assert (await core.dispatch(req("s1", 1), now_ms=T0)).node_id == "a"
    assert (await core.dispatch(req("s2", 0), now_ms=T0)).node_id == "b"
    assert await core.end_session("s1")
    assert not await core.end_session("s1")
    # forgotten: the least-loaded node again (a:2, b:1)
    assert (await core.dispatch(req("s1", 2), now_ms=T0)).node_id == "b"


async def test_turn_affinity_per_target_language(core: SchedulingCore) -> None:
    both = caps(("en",), ("zh", "ja"), 8)
    await core.register_node("a", both, now_ms=T0)
    await core.register_node("b", both, now_ms=T0)
    # utterance 0: zh lands on a (the session's node), ja on b (a already has utterance 0)
    assert (
        await core.dispatch(req(index=0, tgt="zh", reason="max_duration"), now_ms=T0)
    ).node_id == "a"
    assert (
        await core.dispatch(req(index=0, tgt="ja", reason="max_duration"), now_ms=T0)
    ).node_id == "b"
    # utterance 1 of the same turn, ja first: the turn's node b wins over the session's node a
    job = await core.dispatch(req(index=1, tgt="ja", reason="max_duration"), now_ms=T0)
    assert job.node_id == "b"
    # a manual finalize still goes to the turn's node, then ends the turn
    assert (await core.dispatch(req(index=2, tgt="ja", reason="manual"), now_ms=T0)).node_id == "b"
    # next turn: back to the session's node
    assert (
        await core.dispatch(req(index=3, tgt="ja", turn="t2", reason="manual"), now_ms=T0)
    ).node_id == "a"


async def test_size_finalize_keeps_the_turn(core: SchedulingCore) -> None:
    both = caps(("en",), ("zh", "ja"), 8)
    await core.register_node("a", both, now_ms=T0)
    await core.register_node("b", both, now_ms=T0)
    await core.dispatch(req(index=0, tgt="zh", reason="manual"), now_ms=T0)  # session -> a
    await core.dispatch(req(index=0, tgt="ja", reason="max_duration"), now_ms=T0)  # turn ja -> b
    assert (await core.dispatch(req(index=1, tgt="ja", reason="size"), now_ms=T0)).node_id == "b"
    assert (await core.dispatch(req(index=2, tgt="ja", reason="silence"), now_ms=T0)).node_id == "b"
    assert (await core.dispatch(req(index=3, tgt="ja", turn="t2"), now_ms=T0)).node_id == "a"


async def test_bad_dispatch_input_changes_nothing(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    with pytest.raises(InvalidInput):
        await core.dispatch(req(tgt="z h"), now_ms=T0)
    with pytest.raises(InvalidInput):
        await core.dispatch(req(index=-1), now_ms=T0)
    with pytest.raises(InvalidInput):
        await core.dispatch(req(reason="whenever"), now_ms=T0)
    with pytest.raises(InvalidInput):
        await core.dispatch(req(session="s\x00"), now_ms=T0)
    assert await core.list_jobs() == []


async def test_complete_releases_once(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=2), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    done = await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 1)
    assert (done.state, done.replayed, done.session_id, done.tgt_lang) == (
        "completed",
        False,
        "s1",
        "zh",
    )
    assert await running(core) == {"a": 0}
    assert [p.load_permille for p in await core.list_pools()] == [0]
    again = await core.complete(job.job_id, "a", 1, ok=False, now_ms=T0 + 2)
    assert (again.state, again.replayed) == ("completed", True)
    assert await running(core) == {"a": 0}
    # the record stays for job_retention_ms: a dispatch retry still finds it
    assert not (await core.dispatch(req(), now_ms=T0 + 3)).created


async def test_a_completion_whose_reply_was_lost_is_the_callers_own_on_its_retry(
    core: SchedulingCore,
) -> None:
    # The Redis client re-runs a script whose reply a timeout or a reset lost: the caller's
    # retry must learn the completion was its own (else the result was dropped as a replay and
    # the client, its job completed, never heard of it); another copy of the result is a replay.
    await core.register_node("a", caps(slots=2), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    first = await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 1, nonce="try-1")
    assert not first.replayed
    retry = await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 2, nonce="try-1")
    assert (retry.state, retry.replayed, retry.handed) == ("completed", False, None)
    assert await running(core) == {"a": 0}  # its slot released once
    copy = await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 3, nonce="copy-2")
    assert copy.replayed
    assert (await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 4)).replayed


async def test_error_result_fails_the_job(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    assert (await core.complete(job.job_id, "a", 1, ok=False, now_ms=T0 + 1)).state == "failed"
    assert await running(core) == {"a": 0}


async def test_completion_fencing(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    await core.register_node("b", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    with pytest.raises(ForeignNode):
        await core.complete(job.job_id, "b", 1, ok=True, now_ms=T0 + 1)
    with pytest.raises(StaleAttempt):
        await core.complete(job.job_id, "a", 2, ok=True, now_ms=T0 + 1)
    with pytest.raises(JobNotFound):
        await core.complete("job-nope", "a", 1, ok=True, now_ms=T0 + 1)
    assert await running(core) == {"a": 1, "b": 0}
    # after a timeout moved it to b, a's late result still wins (the job has none yet): b's
    # slot goes, b is to be cancelled, and b's own result is refused afterwards
    report = await core.sweep(now_ms=job.deadline_ms)
    assert [(a.new_node, a.cancel_old) for a in report.actions] == [("b", True)]
    with pytest.raises(StaleAttempt):
        await core.complete(job.job_id, "b", 1, ok=True, now_ms=job.deadline_ms + 1)
    assert await running(core) == {"a": 0, "b": 1}
    done = await core.complete(job.job_id, "a", 1, ok=True, now_ms=job.deadline_ms + 1)
    assert (done.state, done.replayed, done.cancel_node) == ("completed", False, "b")
    assert await running(core) == {"a": 0, "b": 0}
    with pytest.raises(StaleAttempt):
        await core.complete(job.job_id, "b", 2, ok=True, now_ms=job.deadline_ms + 2)
    again = await core.complete(job.job_id, "a", 1, ok=True, now_ms=job.deadline_ms + 3)
    assert (again.replayed, again.cancel_node) == (True, None)
    assert await running(core) == {"a": 0, "b": 0}


async def test_ack_and_start(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    acked = await core.ack(job.job_id, "a", 1, now_ms=T0 + 1)
    assert (acked.state, acked.replayed, acked.deadline_ms) == ("acked", False, job.deadline_ms)
    assert (await core.ack(job.job_id, "a", 1, now_ms=T0 + 2)).replayed
    started = await core.start(job.job_id, "a", 1, refresh_deadline=True, now_ms=T0 + 100)
    assert (started.state, started.deadline_ms) == (
        "running",
        T0 + 100 + core.config.job_timeout_ms,
    )
    # the refreshed deadline is what the sweeper sees
    assert (await core.sweep(now_ms=job.deadline_ms)).actions == []
    with pytest.raises(ForeignNode):
        await core.start(job.job_id, "b", 1, now_ms=T0)
    with pytest.raises(StaleAttempt):
        await core.ack(job.job_id, "a", 3, now_ms=T0)
    await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 200)
    with pytest.raises(JobFinished):
        await core.start(job.job_id, "a", 1, now_ms=T0 + 300)


async def test_job_holder_follows_the_job(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=4), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    assert await core.job_holder(job.job_id) == JobHolder("a", 1, "s1")
    await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 1)
    assert await core.job_holder(job.job_id) is None
    assert await core.job_holder("job-unknown") is None
