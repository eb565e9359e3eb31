"""The scheduling scripts survive SCRIPT FLUSH and a Redis restart (NOSCRIPT -> EVAL)."""

from __future__ import annotations

import pytest

from cross_instance.config import RedisConfig
from cross_instance.redis_client import connect
from cross_instance.redis_server import RedisServerProcess
from scheduler.config import SchedulingConfig
from scheduler.scheduling import SchedulingCore
from tests.scheduling.conftest import T0, caps, req

pytestmark = pytest.mark.anyio


async def test_script_flush_mid_run(core: SchedulingCore) -> None:
    await core.load_scripts()
    await core.register_node("a", caps(), now_ms=T0)
    reloads = core.library.reloads
    if hasattr(core.client, "get_nodes"):
        for node in core.client.get_nodes():
            await node.execute_command("SCRIPT", "FLUSH")
    else:
        await core.client.script_flush()
    job = await core.dispatch(req(), now_ms=T0)
    assert job.node_id == "a"
    assert core.library.reloads == reloads + 1


async def test_redis_restart(fresh_redis: RedisServerProcess) -> None:
    client = connect(RedisConfig(url=fresh_redis.url))
    core = SchedulingCore(client, SchedulingConfig(), key_prefix="restart")
    try:
        await core.load_scripts()
        await core.register_node("a", caps(), now_ms=T0)
        fresh_redis.restart()  # no persistence: the state and the script cache are gone
        with pytest.raises(Exception, match="NO_POOL"):
            await core.dispatch(req(), now_ms=T0)
        assert core.library.reloads >= 1
        await core.register_node("a", caps(), now_ms=T0)
        assert (await core.dispatch(req(), now_ms=T0)).node_id == "a"
    finally:
        await client.aclose()


async def test_every_call_is_timed_once_reloads_and_refusals_included(core: SchedulingCore) -> None:
    """The library's timer (a replica's lingua_script_duration_seconds) hears of each call once:
    a call that reloads after SCRIPT FLUSH, and one the script refuses (NO_POOL)."""
    timed: list[tuple[str, float]] = []
    core.library.timer = lambda name, seconds: timed.append((name, seconds))
    await core.load_scripts()
    await core.register_node("a", caps(), now_ms=T0)
    if hasattr(core.client, "get_nodes"):
        for node in core.client.get_nodes():
            await node.execute_command("SCRIPT", "FLUSH")
    else:
        await core.client.script_flush()
    await core.dispatch(req(), now_ms=T0)
    with pytest.raises(Exception, match="NO_POOL"):
        await core.dispatch(req(src="xx", index=1), now_ms=T0)
    assert [name for name, _ in timed] == ["register_node", "dispatch_job", "dispatch_job"]
    assert all(0 < seconds < 5 for _, seconds in timed)
