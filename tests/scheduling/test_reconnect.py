"""A node that drops and comes back: which results complete a job (complete_job's fence), jobs
held for a node that left, lost jobs (move_lost_jobs)."""

from __future__ import annotations

import pytest

from scheduler.scheduling import (
    ForeignNode,
    JobNotFound,
    SchedulingCore,
    StaleAttempt,
    StaleGeneration,
)
from tests.scheduling.conftest import T0, caps, req

pytestmark = pytest.mark.anyio


async def running(core: SchedulingCore) -> dict[str, int]:
    return dict(await core.client.hgetall(core.keys.key("node_running")))


async def slots_and_free(core: SchedulingCore) -> tuple[dict[str, str], set[str]]:
    """node_slots (present while in the pools) and node_free (in the pools with a free slot)."""
    slots = dict(await core.client.hgetall(core.keys.key("node_slots")))
    return slots, set(await core.client.smembers(core.keys.key("node_free")))


async def test_first_valid_result_wins_over_the_attempt_the_job_moved_to(
    core: SchedulingCore,
) -> None:
    a = await core.register_node("a", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    await core.register_node("b", caps(), now_ms=T0)
    await core.register_node("c", caps(), now_ms=T0)
    [move] = (await core.node_offline("a", a.generation, now_ms=T0 + 10)).actions
    assert (move.outcome, move.attempt) == ("reassigned", 2)
    other = "c" if move.new_node == "b" else "b"
    # refused: a node the job was never on, an attempt a never held, an unknown job
    with pytest.raises(ForeignNode):
        await core.complete(job.job_id, other, 2, ok=True, now_ms=T0 + 11)
    with pytest.raises(StaleAttempt):
        await core.complete(job.job_id, "a", 2, ok=True, now_ms=T0 + 11)
    with pytest.raises(StaleAttempt):
        await core.complete(job.job_id, "a", 3, ok=True, now_ms=T0 + 11)
    with pytest.raises(JobNotFound):
        await core.complete("job-nope", "a", 1, ok=True, now_ms=T0 + 11)
    # a comes back (same id) and sends the result of attempt 1: accepted, the mover cancelled
    await core.register_node("a", caps(), now_ms=T0 + 5000)
    done = await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 6000)
    assert (done.state, done.replayed, done.cancel_node) == ("completed", False, move.new_node)
    assert (done.session_id, done.utterance_index) == ("s1", 0)
    assert await running(core) == {"a": "0", "b": "0", "c": "0"}
    # the job has its result: the mover's result is refused
    assert move.new_node is not None
    with pytest.raises(StaleAttempt):
        await core.complete(job.job_id, move.new_node, 2, ok=True, now_ms=T0 + 6001)
    [info] = await core.list_jobs()
    assert (info.state, info.finished_ms) == ("completed", T0 + 6000)


async def test_a_result_for_a_held_job_completes_it_on_the_returning_node(
    core: SchedulingCore,
) -> None:
    a = await core.register_node("a", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    [held] = (await core.node_offline("a", a.generation, now_ms=T0 + 10)).actions
    assert (held.outcome, held.cancel_old) == ("held", False)
    assert await running(core) == {"a": "1"}  # the slot stays with the job
    # ... but the offline node is out of the pools: no slots entry, never in node_free
    assert await slots_and_free(core) == ({}, set())
    await core.register_node("a", caps(), now_ms=T0 + 5000)
    assert await slots_and_free(core) == ({"a": "2"}, {"a"})  # 1 of 2 slots taken
    done = await core.complete(job.job_id, "a", 1, ok=True, now_ms=T0 + 6000)
    assert (done.state, done.cancel_node) == ("completed", None)
    assert await running(core) == {"a": "0"}
    assert await slots_and_free(core) == ({"a": "2"}, {"a"})


async def test_a_held_job_whose_node_never_returns_fails_at_its_deadline(
    core: SchedulingCore,
) -> None:
    a = await core.register_node("a", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    await core.node_offline("a", a.generation, now_ms=T0 + 10)
    assert (await core.sweep(now_ms=job.deadline_ms - 1)).actions == []
    [move] = (await core.sweep(now_ms=job.deadline_ms)).actions
    # nobody to cancel: the node is gone, and its count goes with its last slot
    assert (move.outcome, move.cause, move.cancel_old) == ("failed", "timeout", False)
    assert await running(core) == {}
    assert await slots_and_free(core) == ({}, set())


async def test_a_held_slot_released_while_others_stay_keeps_the_gone_node_out_of_node_free(
    core: SchedulingCore,
) -> None:
    a = await core.register_node("a", caps(slots=2), now_ms=T0)
    first = await core.dispatch(req(index=0), now_ms=T0)
    second = await core.dispatch(req(index=1), now_ms=T0 + 2)
    assert (first.node_id, second.node_id) == ("a", "a")
    held = (await core.node_offline("a", a.generation, now_ms=T0 + 10)).actions
    assert [h.outcome for h in held] == ["held", "held"]
    assert await running(core) == {"a": "2"}
    # the node's result for one of them, from no connection (it never came back): the count
    # drops, the node stays out of node_free and node_slots
    done = await core.complete(first.job_id, "a", 1, ok=True, now_ms=T0 + 20)
    assert (done.state, done.cancel_node, done.handed) == ("completed", None, None)
    assert await running(core) == {"a": "1"}
    assert await slots_and_free(core) == ({}, set())
    # the last held slot takes the count with it
    await core.complete(second.job_id, "a", 1, ok=False, now_ms=T0 + 30)
    assert await running(core) == {}
    assert await slots_and_free(core) == ({}, set())


async def test_lost_jobs_of_a_reconnected_node_move_and_later_ones_stay(
    core: SchedulingCore,
) -> None:
    a = await core.register_node("a", caps(slots=4), now_ms=T0)
    old = await core.dispatch(req(index=0), now_ms=T0)
    await core.node_offline("a", a.generation, now_ms=T0 + 10)  # held: no other node
    await core.register_node("b", caps(), now_ms=T0 + 20)
    back = await core.register_node("a", caps(slots=4), now_ms=T0 + 5000)
    new = await core.dispatch(req(session="s2", index=0), now_ms=T0 + 5000)
    if new.node_id != "a":  # b took it: a second one for a
        new = await core.dispatch(req(session="s3", index=0, exclude=("b",)), now_ms=T0 + 5000)
    assert new.node_id == "a"
    with pytest.raises(StaleGeneration):
        await core.move_lost_jobs("a", a.generation, now_ms=T0 + 5100)
    [move] = (await core.move_lost_jobs("a", back.generation, now_ms=T0 + 5100)).actions
    assert (move.job_id, move.cause, move.outcome, move.new_node, move.attempt) == (
        old.job_id,
        "job_lost",
        "reassigned",
        "b",
        2,
    )
    assert (await core.move_lost_jobs("a", back.generation, now_ms=T0 + 5200)).actions == []
    assert (await core.job_holder(new.job_id)) is not None
    assert (await core.job_holder(new.job_id)).node_id == "a"  # type: ignore[union-attr]


async def test_a_node_back_running_fewer_jobs_than_it_had_gets_all_its_old_jobs_moved(
    core: SchedulingCore,
) -> None:
    """Its replica died (nobody took it offline); it comes back still running one of its two
    jobs: one was lost, which one it cannot say, so both move; the one it still runs wins if
    its result comes first."""
    a = await core.register_node("a", caps(slots=4), now_ms=T0)
    first = await core.dispatch(req(index=0), now_ms=T0)
    second = await core.dispatch(req(index=1), now_ms=T0 + 1)
    assert (first.node_id, second.node_id) == ("a", "a")
    await core.register_node("b", caps(), now_ms=T0 + 20)
    back = await core.register_node("a", caps(slots=4), now_ms=T0 + 5000)
    assert a.generation != back.generation
    # it runs both: nothing is known lost, nothing moves
    kept = await core.move_lost_jobs("a", back.generation, running=2, now_ms=T0 + 5100)
    assert (kept.actions, kept.remaining) == ([], 2)
    moves = await core.move_lost_jobs("a", back.generation, running=1, now_ms=T0 + 5200)
    assert sorted((m.job_id, m.new_node, m.attempt) for m in moves.actions) == sorted(
        [(first.job_id, "b", 2), (second.job_id, "b", 2)]
    )
    assert moves.remaining == 0
    done = await core.complete(second.job_id, "a", 1, ok=True, now_ms=T0 + 6000)
    assert (done.state, done.cancel_node) == ("completed", "b")


async def test_a_node_orphaned_by_a_dead_replica_goes_offline_after_its_grace(
    core: SchedulingCore,
) -> None:
    """The replica holding a's socket died (the takeover released a and b); a never came back,
    b registered again meanwhile: a's jobs move after node_orphan_grace_ms, b keeps its own."""
    grace = core.config.node_orphan_grace_ms
    await core.register_node("a", caps(slots=4), now_ms=T0)
    job = await core.dispatch(req(index=0), now_ms=T0)
    assert job.node_id == "a"
    await core.register_node("b", caps(slots=4), now_ms=T0 + 100)
    takeover = T0 + 8000
    await core.register_node("b", caps(slots=4), now_ms=takeover - 500)  # back elsewhere
    cut = await core.orphan_nodes(["a", "b", "never-seen"], quiet_ms=2000, now_ms=takeover)
    assert cut == 1
    alive = core.keys.key("node_alive")
    assert await core.client.zscore(alive, "a") == takeover + grace
    assert await core.client.zscore(alive, "b") == takeover - 500 + core.config.node_ttl_ms
    assert await core.orphan_nodes(["a"], quiet_ms=2000, now_ms=takeover + 10) == 0  # replay
    assert (await core.sweep(now_ms=takeover + grace - 1)).actions == []
    [move] = (await core.sweep(now_ms=takeover + grace + 1)).actions
    assert (move.job_id, move.old_node, move.new_node, move.outcome) == (
        job.job_id,
        "a",
        "b",
        "reassigned",
    )
