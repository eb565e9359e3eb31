"""Utterance indexes stay exact inside the scripts (cjson prints 14 significant digits), and one
job the daemon cannot read back does not stop the others a sweep moved."""

from __future__ import annotations

import msgspec
import pytest

from scheduler.scheduling import InvalidInput, SchedulingCore
from scheduler.scheduling.types import MAX_UTTERANCE_INDEX
from tests.scheduling.conftest import T0, caps, req

pytestmark = pytest.mark.anyio


async def test_an_utterance_index_lua_cannot_keep_exactly_is_refused(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    with pytest.raises(InvalidInput):
        await core.dispatch(req(index=2**53 - 1), now_ms=T0)
    with pytest.raises(InvalidInput):
        await core.dispatch(req(index=MAX_UTTERANCE_INDEX + 1), now_ms=T0)
    assert await core.list_jobs() == []


async def test_the_largest_utterance_index_completes_and_moves(core: SchedulingCore) -> None:
    await core.register_node("a", caps(), now_ms=T0)
    await core.register_node("b", caps(), now_ms=T0)
    first = await core.dispatch(req(index=MAX_UTTERANCE_INDEX), now_ms=T0)
    second = await core.dispatch(req(session="s2", index=MAX_UTTERANCE_INDEX), now_ms=T0)
    done = await core.complete(first.job_id, first.node_id, 1, ok=True, now_ms=T0 + 1)
    assert done.utterance_index == MAX_UTTERANCE_INDEX
    [move] = (await core.sweep(now_ms=second.deadline_ms)).actions
    assert (move.utterance_index, move.outcome) == (MAX_UTTERANCE_INDEX, "reassigned")


async def test_one_unreadable_job_does_not_stop_the_sweeps_other_moves(
    core: SchedulingCore,
) -> None:
    await core.register_node("a", caps(slots=4), now_ms=T0)
    await core.register_node("b", caps(slots=4), now_ms=T0)
    good = await core.dispatch(req(session="s1"), now_ms=T0)
    bad = await core.dispatch(req(session="s2"), now_ms=T0)
    # a record as an older version wrote it: a 16-digit index, which Lua prints as 9.0e+15
    key = core.keys.key("jobs")
    record = msgspec.json.decode(await core.client.hget(key, bad.job_id))
    record["index"] = 2**53 - 1
    await core.client.hset(key, bad.job_id, msgspec.json.encode(record))
    report = await core.sweep(now_ms=good.deadline_ms)
    assert [m.job_id for m in report.actions] == [good.job_id]
    assert report.unreadable == 1
