"""register_node, heartbeat_node, take_node_offline: contracts, generations, pool moves."""

from __future__ import annotations

import pytest

from scheduler.config import SchedulingConfig
from scheduler.scheduling import (
    InvalidInput,
    NodeCapabilities,
    NodeNotRegistered,
    SchedulingCore,
    StaleGeneration,
)
from tests.scheduling.conftest import T0, caps, req

pytestmark = pytest.mark.anyio

LANGUAGE_LIMIT = SchedulingConfig().max_languages_per_node


async def test_register_joins_every_directed_pair(core: SchedulingCore) -> None:
    reg = await core.register_node("n1", caps(("en", "zh"), ("en", "zh"), 4), now_ms=T0)
    assert sorted(reg.pairs) == ["en:en", "en:zh", "zh:en", "zh:zh"]
    assert reg.alive_until_ms == T0 + core.config.node_ttl_ms
    pools = await core.list_pools()
    assert sorted((p.pair, p.node_id, p.load_permille) for p in pools) == [
        ("en:en", "n1", 0),
        ("en:zh", "n1", 0),
        ("zh:en", "n1", 0),
        ("zh:zh", "n1", 0),
    ]
    [node] = await core.list_nodes()
    assert (node.node_id, node.max, node.running, node.in_pools) == ("n1", 4, 0, True)


async def test_slots_default_and_cap(core: SchedulingCore) -> None:
    await core.register_node("n1", NodeCapabilities(asr=["en"], semantic=["zh"]), now_ms=T0)
    await core.register_node("n2", caps(slots=10_000), now_ms=T0)
    by_id = {n.node_id: n.max for n in await core.list_nodes()}
    assert by_id == {
        "n1": core.config.default_max_concurrent_jobs,
        "n2": core.config.max_concurrent_jobs_limit,
    }


async def test_reregistration_is_a_new_generation_and_fences_the_old(
    core: SchedulingCore,
) -> None:
    old = await core.register_node("n1", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    new = await core.register_node("n1", caps(("en",), ("ja",)), now_ms=T0 + 1)
    assert new.generation > old.generation
    with pytest.raises(StaleGeneration):
        await core.heartbeat("n1", old.generation, now_ms=T0 + 2)
    with pytest.raises(StaleGeneration):
        await core.node_offline("n1", old.generation, now_ms=T0 + 2)
    # the newer registration is intact: its pools, and the job it still runs
    assert [(p.pair, p.load_permille) for p in await core.list_pools()] == [("en:ja", 500)]
    [node] = await core.list_nodes()
    assert (node.generation, node.running) == (new.generation, 1)
    assert (await core.list_jobs())[0].job_id == job.job_id


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (NodeCapabilities(asr=["en:zh"], semantic=["zh"]), "language code"),
        (NodeCapabilities(asr=["en"], semantic=[""]), "language code"),
        (
            NodeCapabilities(asr=["en"] * (LANGUAGE_LIMIT + 1), semantic=["zh"]),
            rf"more than scheduling.max_languages_per_node \({LANGUAGE_LIMIT}\)",
        ),
        (NodeCapabilities(asr=["en"], semantic=["zh"], max_concurrent_jobs=0), "positive"),
    ],
)
async def test_bad_capabilities_change_nothing(
    core: SchedulingCore, bad: NodeCapabilities, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await core.register_node("n1", bad, now_ms=T0)
    with pytest.raises(InvalidInput, match="valid id"):
        await core.register_node("n\x001", caps(), now_ms=T0)
    assert await core.list_nodes() == []
    assert await core.client.exists(*core.keys.all()) == 0


async def test_heartbeat_refreshes_and_stores_load(core: SchedulingCore) -> None:
    reg = await core.register_node("n1", caps(), now_ms=T0)
    ack = await core.heartbeat("n1", reg.generation, reported_load={"cpu": 12.5}, now_ms=T0 + 500)
    assert (ack.moved, ack.alive_until_ms) == (False, T0 + 500 + core.config.node_ttl_ms)
    [node] = await core.list_nodes()
    assert node.reported_load == {"cpu": 12.5}
    assert node.last_hb_ms == T0 + 500


async def test_heartbeat_of_unknown_node(core: SchedulingCore) -> None:
    with pytest.raises(NodeNotRegistered):
        await core.heartbeat("ghost", 1, now_ms=T0)
    assert await core.list_nodes() == []


async def test_language_change_moves_pools_keeping_load(core: SchedulingCore) -> None:
    reg = await core.register_node("n1", caps(("en",), ("zh", "ja"), 4), now_ms=T0)
    await core.dispatch(req(tgt="zh"), now_ms=T0)
    ack = await core.heartbeat(
        "n1", reg.generation, caps=caps(("en",), ("ja", "de"), 4), now_ms=T0 + 1
    )
    assert ack.moved
    pools = sorted((p.pair, p.load_permille) for p in await core.list_pools())
    assert pools == [("en:de", 250), ("en:ja", 250)]
    # same languages in another order: no move
    ack = await core.heartbeat(
        "n1", reg.generation, caps=caps(("en",), ("de", "ja"), 4), now_ms=T0 + 2
    )
    assert not ack.moved


async def test_offline_fails_jobs_over_at_once(core: SchedulingCore) -> None:
    a = await core.register_node("a", caps(), now_ms=T0)
    await core.register_node("b", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    assert job.node_id == "a"
    [action] = (await core.node_offline("a", a.generation, now_ms=T0 + 10)).actions
    assert (action.job_id, action.old_node, action.new_node) == (job.job_id, "a", "b")
    assert (action.outcome, action.cause, action.attempt) == ("reassigned", "node_offline", 2)
    assert action.payload == '{"type":"job_assign"}'
    assert [(n.node_id, n.running) for n in await core.list_nodes()] == [("b", 1)]
    assert {p.node_id for p in await core.list_pools()} == {"b"}
    with pytest.raises(NodeNotRegistered):
        await core.node_offline("a", a.generation, now_ms=T0 + 11)


async def test_offline_with_no_other_node_holds_the_job_for_its_node(
    core: SchedulingCore,
) -> None:
    a = await core.register_node("a", caps(), now_ms=T0)
    job = await core.dispatch(req(), now_ms=T0)
    [action] = (await core.node_offline("a", a.generation, now_ms=T0 + 10)).actions
    assert (action.outcome, action.error, action.new_node) == ("held", "NO_POOL", None)
    [info] = await core.list_jobs()
    assert (info.job_id, info.state, info.node_id, info.attempt) == (
        job.job_id,
        "dispatched",
        "a",
        1,
    )
    assert await core.list_pools() == []
    # the slot stays with the job: the node comes back with it
    again = await core.register_node("a", caps(), now_ms=T0 + 20)
    [node] = await core.list_nodes()
    assert (node.generation, node.running) == (again.generation, 1)
