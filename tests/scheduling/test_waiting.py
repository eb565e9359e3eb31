"""Jobs that wait for a slot (issue 11): every node of the pair busy is not an error at once.

The real node reports no capacity and queues work itself; a burst of short utterances against a
slow node must wait for slots instead of failing. A waiting job is placed by the completion that
frees a slot (oldest waiter of a pair the node serves), by a later dispatch of its pair, or by
the sweep; it fails with NO_AVAILABLE_NODE only when ``slot_wait_ms`` ran out or the pair already
has ``slot_wait_max`` waiters.
"""

from __future__ import annotations

import msgspec
import pytest

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis, connect
from cross_instance.redis_server import RedisServerProcess
from scheduler.config import SchedulingConfig
from scheduler.jobs import failover_code
from scheduler.scheduling import AllNodesFull, NodeCapabilities, SchedulingCore
from tests.scheduling.conftest import T0, caps, req
from tests.scheduling.test_scale import REAL_NODE_LANGUAGES, command_calls

pytestmark = pytest.mark.anyio


def with_config(core: SchedulingCore, **changes: int) -> SchedulingCore:
    config = msgspec.structs.replace(core.config, **changes)
    return SchedulingCore(core.client, config, key_prefix=core.keys.key_prefix)


async def waiting_jobs(core: SchedulingCore) -> list[str]:
    """Job ids waiting for a slot, oldest first."""
    return list(await core.client.zrange(core.keys.key("waiting_order"), 0, -1))


async def test_every_node_busy_makes_the_job_wait_not_fail(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=1), now_ms=T0)
    first = await core.dispatch(req("s1"), now_ms=T0)
    waiting = await core.dispatch(req("s2"), now_ms=T0 + 1)
    assert (waiting.state, waiting.node_id, waiting.created) == ("waiting", "", True)
    assert waiting.deadline_ms == T0 + 1 + core.config.slot_wait_ms
    assert await waiting_jobs(core) == [waiting.job_id]
    # a replay of the waiting utterance is the same job, still waiting
    again = await core.dispatch(req("s2"), now_ms=T0 + 2)
    assert (again.job_id, again.state, again.created) == (waiting.job_id, "waiting", False)
    # the freed slot goes straight to it, in the completion's own script
    done = await core.complete(first.job_id, "a", 1, ok=True, now_ms=T0 + 1500)
    assert done.handed is not None
    handed = done.handed
    assert (handed.job_id, handed.new_node, handed.attempt) == (waiting.job_id, "a", 1)
    assert (handed.cause, handed.outcome, handed.old_node) == ("slot_wait", "reassigned", "")
    assert handed.waited_ms == 1499 and handed.payload == '{"type":"job_assign"}'
    assert handed.deadline_ms == T0 + 1500 + core.config.job_timeout_ms
    [job] = [j for j in await core.list_jobs() if j.job_id == waiting.job_id]
    assert (job.state, job.node_id, job.tried) == ("dispatched", "a", ["a"])
    assert await waiting_jobs(core) == []
    # it is an ordinary job now: its node completes it
    assert (await core.complete(waiting.job_id, "a", 1, ok=True, now_ms=T0 + 1600)).handed is None


async def test_waiters_of_a_pair_get_freed_slots_oldest_first(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=1), now_ms=T0)
    running = (await core.dispatch(req("s0"), now_ms=T0)).job_id
    waiters = [(await core.dispatch(req(f"s{i}"), now_ms=T0 + i)).job_id for i in range(1, 5)]
    served = []
    for step in range(4):
        done = await core.complete(running, "a", 1, ok=True, now_ms=T0 + 100 + step)
        assert done.handed is not None
        running = done.handed.job_id
        served.append(running)
    assert served == waiters


async def test_a_new_job_does_not_overtake_the_waiters_of_its_pair(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=1), now_ms=T0)
    await core.dispatch(req("s0"), now_ms=T0)
    old = await core.dispatch(req("s1"), now_ms=T0 + 1)
    # a slot appears without a completion (a node joins): the next dispatch of the pair queues
    # behind the waiter and hands that slot to the waiter
    await core.register_node("b", caps(slots=1), now_ms=T0 + 2)
    new = await core.dispatch(req("s2"), now_ms=T0 + 3)
    assert new.state == "waiting"
    [placed] = new.placed
    assert (placed.job_id, placed.new_node, placed.outcome) == (old.job_id, "b", "reassigned")
    assert await waiting_jobs(core) == [new.job_id]


async def test_a_freed_slot_goes_to_the_oldest_waiter_the_node_can_take(
    core: SchedulingCore,
) -> None:
    # "a" serves en:zh and en:ja, "b" only en:de; both full
    await core.register_node("a", caps(("en",), ("zh", "ja"), 1), now_ms=T0)
    await core.register_node("b", caps(("en",), ("de",), 1), now_ms=T0)
    on_a = await core.dispatch(req("s0", tgt="zh"), now_ms=T0)
    await core.dispatch(req("s1", tgt="de"), now_ms=T0)
    for_b = await core.dispatch(req("s2", tgt="de"), now_ms=T0 + 1)
    for_a = await core.dispatch(req("s3", tgt="ja"), now_ms=T0 + 2)
    done = await core.complete(on_a.job_id, "a", 1, ok=True, now_ms=T0 + 3)
    assert done.handed is not None
    assert (done.handed.job_id, done.handed.new_node) == (for_a.job_id, "a")
    assert await waiting_jobs(core) == [for_b.job_id]


async def test_waiters_per_pair_are_bounded(core: SchedulingCore) -> None:
    bounded = with_config(core, slot_wait_max=2)
    await bounded.register_node("a", caps(("en",), ("zh", "ja"), 1), now_ms=T0)
    await bounded.dispatch(req("s0"), now_ms=T0)
    for i in (1, 2):
        assert (await bounded.dispatch(req(f"s{i}"), now_ms=T0 + i)).state == "waiting"
    with pytest.raises(AllNodesFull):
        await bounded.dispatch(req("s3"), now_ms=T0 + 3)
    # the bound is per pair: another pair may still wait
    assert (await bounded.dispatch(req("s4", tgt="ja"), now_ms=T0 + 4)).state == "waiting"
    assert len(await waiting_jobs(core)) == 3
    assert len(await core.list_jobs()) == 4  # the refused one left nothing behind


async def test_only_busy_nodes_are_waited_for(core: SchedulingCore) -> None:
    # the only node already had this utterance (another target language): no slot will ever
    # make it usable, so the job fails at once instead of waiting
    await core.register_node("a", caps(("en",), ("zh", "ja"), 4), now_ms=T0)
    await core.dispatch(req(tgt="zh"), now_ms=T0)
    with pytest.raises(AllNodesFull):
        await core.dispatch(req(tgt="ja"), now_ms=T0)
    assert await waiting_jobs(core) == []


async def test_a_wait_that_runs_out_fails_with_no_available_node(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=1), now_ms=T0)
    first = await core.dispatch(req("s0"), now_ms=T0)
    waiting = await core.dispatch(req("s1"), now_ms=T0)
    # the node stays alive and busy; the wait runs out before any slot frees
    reg_time = T0 + core.config.slot_wait_ms - 1
    assert (await core.sweep(now_ms=reg_time)).actions == []
    later = T0 + core.config.slot_wait_ms
    report = await core.sweep(now_ms=later)
    [expired] = report.actions
    assert (expired.job_id, expired.cause, expired.outcome) == (
        waiting.job_id,
        "slot_wait",
        "failed",
    )
    assert expired.waited_ms == core.config.slot_wait_ms
    assert failover_code(expired) == "NO_AVAILABLE_NODE"
    assert report.waiting == 0 and await waiting_jobs(core) == []
    [job] = [j for j in await core.list_jobs() if j.job_id == waiting.job_id]
    assert job.state == "failed"
    # the slot that frees afterwards goes to nobody; the expired job stays failed
    assert (await core.complete(first.job_id, "a", 1, ok=True, now_ms=later + 1)).handed is None
    assert (await core.dispatch(req("s1"), now_ms=later + 2)).state == "failed"


async def test_the_sweep_places_waiters_a_slot_is_free_for(core: SchedulingCore) -> None:
    reg = await core.register_node("a", caps(slots=1), now_ms=T0)
    await core.dispatch(req("s0"), now_ms=T0)
    waiting = await core.dispatch(req("s1"), now_ms=T0 + 1)
    # "a" leaves (its job fails over to nowhere), "b" joins with a free slot: no completion
    # hands anything off, the sweep does
    await core.node_offline("a", reg.generation, now_ms=T0 + 2)
    await core.register_node("b", caps(slots=1), now_ms=T0 + 3)
    report = await core.sweep(now_ms=T0 + 4)
    [placed] = [a for a in report.actions if a.cause == "slot_wait"]
    assert (placed.job_id, placed.new_node, placed.outcome) == (waiting.job_id, "b", "reassigned")
    assert placed.waited_ms == 3 and report.waiting == 0


async def test_a_freed_slot_passes_over_a_waiter_whose_session_ended(
    core: SchedulingCore,
) -> None:
    # the user closed the tab while the utterance waited: no node works on it, the next waiter
    # gets the slot, and the sweep ends it quietly (nobody is left to tell)
    await core.register_node("a", caps(slots=1), now_ms=T0)
    running = await core.dispatch(req("s0"), now_ms=T0)
    gone = await core.dispatch(req("s1"), now_ms=T0 + 1)
    live = await core.dispatch(req("s2"), now_ms=T0 + 2)
    await core.end_session("s1", now_ms=T0 + 3)
    done = await core.complete(running.job_id, "a", 1, ok=True, now_ms=T0 + 4)
    assert done.handed is not None
    assert (done.handed.job_id, done.handed.new_node) == (live.job_id, "a")
    report = await core.sweep(now_ms=T0 + 5)
    [ended] = report.actions
    assert (ended.job_id, ended.cause, ended.outcome, ended.error) == (
        gone.job_id,
        "slot_wait",
        "failed",
        "SESSION_ENDED",
    )
    assert report.waiting == 0 and await waiting_jobs(core) == []
    [job] = [j for j in await core.list_jobs() if j.job_id == gone.job_id]
    assert job.state == "failed"


async def test_a_waiter_whose_session_ended_is_never_placed(core: SchedulingCore) -> None:
    await core.register_node("a", caps(slots=1), now_ms=T0)
    await core.dispatch(req("s0"), now_ms=T0)
    gone = await core.dispatch(req("s1"), now_ms=T0 + 1)
    await core.end_session("s1", now_ms=T0 + 2)
    # a slot appears without a completion: neither a dispatch of the pair nor the sweep puts
    # the ended session's job on it; the new job takes it once the sweep ended the old one
    await core.register_node("b", caps(slots=1), now_ms=T0 + 3)
    behind = await core.dispatch(req("s2"), now_ms=T0 + 4)
    assert (behind.state, behind.placed) == ("waiting", [])
    report = await core.sweep(now_ms=T0 + 5)
    by_job = {a.job_id: a for a in report.actions}
    assert (by_job[gone.job_id].outcome, by_job[gone.job_id].error) == ("failed", "SESSION_ENDED")
    assert by_job[gone.job_id].new_node is None
    assert (by_job[behind.job_id].outcome, by_job[behind.job_id].new_node) == ("reassigned", "b")
    assert await waiting_jobs(core) == []


async def test_a_wait_that_runs_out_after_its_session_ended_fails_quietly(
    core: SchedulingCore,
) -> None:
    await core.register_node("a", caps(slots=1), now_ms=T0)
    await core.dispatch(req("s0"), now_ms=T0)
    gone = await core.dispatch(req("s1"), now_ms=T0 + 1)
    # its wait runs out after the session ended: the expiry names SESSION_ENDED, not
    # NO_AVAILABLE_NODE (the client is gone)
    await core.end_session("s1", now_ms=T0 + 2)
    [expired] = (await core.sweep(now_ms=T0 + 1 + core.config.slot_wait_ms)).actions
    assert (expired.job_id, expired.error) == (gone.job_id, "SESSION_ENDED")


async def waiting_costs(client: AnyRedis, key_prefix: str, languages: list[str]) -> list[int]:
    """Commands Redis runs for: a complete with nobody waiting, a dispatch that waits, a
    dispatch queued behind waiters, a complete that hands its slot to a waiter."""
    core = SchedulingCore(client, SchedulingConfig(), key_prefix=key_prefix)
    await core.load_scripts()
    node = NodeCapabilities(asr=languages, semantic=languages, max_concurrent_jobs=1)
    await core.register_node("electron-1", node, now_ms=T0)
    await core.register_node("electron-2", node, now_ms=T0)
    costs = []

    async def counted(call):  # type: ignore[no-untyped-def]
        before = await command_calls(client)
        result = await call
        costs.append(await command_calls(client) - before)
        return result

    first = await core.dispatch(req("s0", src="de", tgt="fr"), now_ms=T0)
    done = await counted(core.complete(first.job_id, first.node_id, 1, ok=True, now_ms=T0 + 1))
    assert done.handed is None
    running = [(await core.dispatch(req(f"s{i}", src="de", tgt="fr"), now_ms=T0)) for i in (1, 2)]
    assert {r.state for r in running} == {"dispatched"}
    waits = await counted(core.dispatch(req("s3", src="de", tgt="fr"), now_ms=T0 + 2))
    behind = await counted(core.dispatch(req("s4", src="de", tgt="fr"), now_ms=T0 + 3))
    assert (waits.state, behind.state, behind.placed) == ("waiting", "waiting", [])
    done = await counted(
        core.complete(running[0].job_id, running[0].node_id, 1, ok=True, now_ms=T0 + 4)
    )
    assert done.handed is not None and done.handed.job_id == waits.job_id
    return costs


async def test_waiting_costs_the_same_at_any_pair_count(
    fresh_redis: RedisServerProcess, key_prefix: str
) -> None:
    client = connect(RedisConfig(url=fresh_redis.url))
    try:
        four_pairs = await waiting_costs(client, f"{key_prefix}a", ["de", "fr"])
        ten_thousand = await waiting_costs(client, f"{key_prefix}b", list(REAL_NODE_LANGUAGES))
    finally:
        await client.aclose()
    assert ten_thousand == four_pairs
    complete_alone, _, _, complete_handing = four_pairs
    # nobody waiting: the completion's only extra work is one ZCARD of the waiting index
    assert complete_handing > complete_alone


async def test_a_node_that_reports_no_capacity_is_not_capped_at_a_few_slots(
    core: SchedulingCore,
) -> None:
    # the real node never sends max_concurrent_jobs; a node that reports a number keeps it
    silent = NodeCapabilities(asr=["en"], semantic=["zh"])
    await core.register_node("real", silent, now_ms=T0)
    await core.register_node("reporting", caps(("en",), ("ja",), 2), now_ms=T0)
    burst = [await core.dispatch(req(f"s{i}", i), now_ms=T0) for i in range(12)]
    assert {job.state for job in burst} == {"dispatched"}
    slots = {n.node_id: n.max for n in await core.list_nodes()}
    assert slots == {"real": core.config.default_max_concurrent_jobs, "reporting": 2}
    assert slots["real"] >= 16
