"""The scheduling core's part of issue 11 on the session side: each target language of a two-way
utterance is its own job; a session that ended stops its jobs' failover."""

from __future__ import annotations

import msgspec
import pytest

from scheduler.scheduling import SchedulingCore
from tests.scheduling.conftest import T0, caps, req

pytestmark = pytest.mark.anyio


async def test_two_targets_selected_from_one_pool_are_two_jobs(core: SchedulingCore) -> None:
    """Two-way auto mode selects from lang_a:lang_b for every target; on main the second target
    had the first one's idempotency key and came back as a replay of it."""
    for node in ("a", "b"):
        await core.register_node(node, caps(asr=("zh",), semantic=("en",)), now_ms=T0)
    pool = ("zh", "en")
    en = await core.dispatch(msgspec.structs.replace(req(src="zh", tgt="en"), pool=pool), now_ms=T0)
    de = await core.dispatch(msgspec.structs.replace(req(src="zh", tgt="de"), pool=pool), now_ms=T0)
    assert en.created and de.created and en.job_id != de.job_id
    assert en.node_id != de.node_id  # one (session, index) never twice on a node
    again = await core.dispatch(
        msgspec.structs.replace(req(src="zh", tgt="de"), pool=pool), now_ms=T0
    )
    assert (again.job_id, again.created) == (de.job_id, False)
    jobs = {j.job_id: j for j in await core.list_jobs()}
    assert (jobs[en.job_id].tgt_lang, jobs[de.job_id].tgt_lang) == ("en", "de")


async def test_a_job_of_an_ended_session_is_not_moved_at_its_deadline(
    core: SchedulingCore,
) -> None:
    for node in ("a", "b"):
        await core.register_node(node, caps(), now_ms=T0)
    job = await core.dispatch(req(payload='{"trace_id":"t-1"}'), now_ms=T0)
    assert await core.end_session("s1", now_ms=T0 + 1)
    now = T0 + core.config.job_timeout_ms
    for node in ("a", "b"):
        reg = {n.node_id: n.generation for n in await core.list_nodes()}[node]
        await core.heartbeat(node, reg, now_ms=now)
    [action] = (await core.sweep(now_ms=now)).actions
    assert (action.job_id, action.cause, action.outcome, action.error) == (
        job.job_id, "timeout", "failed", "SESSION_ENDED"
    )  # fmt: skip
    assert action.payload == '{"trace_id":"t-1"}'  # its trace goes on the job_cancel
    assert all(n.running == 0 for n in await core.list_nodes())
    # The ended mark is swept once every attempt of the session's jobs is past.
    keep = core.config.job_timeout_ms * core.config.max_attempts
    report = await core.sweep(now_ms=T0 + 1 + keep + 1)
    assert report.removed_sessions == 1
