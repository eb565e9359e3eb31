"""Nodes at real scale (issue 11): ~100 languages per list, pools of many nodes.

A real Electron node advertises the intersection of its services' languages (Whisper x M2M100:
about 100), so it serves ~10,000 directed pairs. It must register, be served, and cost the
same per slot change as a one-pair node: dispatch, complete and a heartbeat that changes
nothing write no pool member (counted with Redis' own command statistics on a private server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis, connect
from cross_instance.redis_server import RedisServerProcess
from scheduler.config import SchedulingConfig
from scheduler.scheduling import NodeCapabilities, SchedulingCore
from tests.scheduling.conftest import T0, caps, req

pytestmark = pytest.mark.anyio

# 100 language codes, as many as a real node advertises (Whisper's languages x M2M100's).
REAL_NODE_LANGUAGES = (
    "af am ar as az ba be bg bn br bs ca cs cy da de el en es et fa fi fo fr gl gu ha he hi hr ht "
    "hu hy id is it ja jv ka kk km kn ko lb ln lo lt lv mg mk ml mn mr ms my ne nl nn no oc pa pl "
    "ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh "
    "la haw mt bo ga xh zu"
).split()
SORTED_SET_WRITES = ("cmdstat_zadd", "cmdstat_zrem")


@pytest.fixture
async def private(fresh_redis: RedisServerProcess) -> AsyncIterator[AnyRedis]:
    client = connect(RedisConfig(url=fresh_redis.url))
    try:
        yield client
    finally:
        await client.aclose()


async def command_calls(client: AnyRedis, names: tuple[str, ...] = ()) -> int:
    """Commands Redis ran so far (those of scripts included): all, or only ``names``."""
    stats = await client.info("commandstats")
    return sum(int(value["calls"]) for name, value in stats.items() if not names or name in names)


def real_node(languages: tuple[str, ...] | list[str] = REAL_NODE_LANGUAGES) -> NodeCapabilities:
    # the real node sends one list for asr, semantic and tts alike, and no max_concurrent_jobs
    langs = list(languages)
    return NodeCapabilities(asr=langs, semantic=langs, tts=langs)


async def test_a_real_node_with_100_languages_is_accepted_and_served(
    core: SchedulingCore,
) -> None:
    assert len(REAL_NODE_LANGUAGES) == 100
    reg = await core.register_node("electron-1", real_node(), now_ms=T0)
    assert len(reg.pairs) == 100 * 100
    job = await core.dispatch(req(src="sw", tgt="ja"), now_ms=T0)
    assert job.node_id == "electron-1"
    done = await core.complete(job.job_id, "electron-1", 1, ok=True, now_ms=T0 + 1)
    assert (done.state, done.replayed) == ("completed", False)
    [node] = await core.list_nodes()
    assert (node.running, node.in_pools, len(node.pairs)) == (0, True, 10_000)


async def test_more_languages_than_the_limit_are_refused_by_name(core: SchedulingCore) -> None:
    limit = core.config.max_languages_per_node
    assert limit >= 128
    too_many = [f"x{i:04d}" for i in range(limit + 1)]
    with pytest.raises(ValueError, match=rf"max_languages_per_node \({limit}\)"):
        await core.register_node("electron-1", real_node(too_many), now_ms=T0)
    assert await core.list_nodes() == []


async def commands_of(client: AnyRedis, key_prefix: str, languages: list[str]) -> list[int]:
    """Commands run by three dispatch + complete rounds, then by an idle heartbeat, and the
    heartbeat's sorted-set writes."""
    core = SchedulingCore(client, SchedulingConfig(), key_prefix=key_prefix)
    await core.load_scripts()  # no NOSCRIPT round trip in what is counted
    reg = await core.register_node("electron-1", real_node(languages), now_ms=T0)
    await core.register_node("electron-2", real_node(languages), now_ms=T0)
    pools = await client.zcard(core.keys.key("pools"))
    before = await command_calls(client)
    for index in range(3):
        job = await core.dispatch(req(index=index, src="de", tgt="fr"), now_ms=T0)
        await core.complete(job.job_id, job.node_id, 1, ok=True, now_ms=T0 + 1)
    rounds = await command_calls(client) - before
    # the same capabilities, the lists in another order: nothing moves
    before, writes_before = (
        await command_calls(client),
        await command_calls(client, SORTED_SET_WRITES),
    )
    ack = await core.heartbeat(
        "electron-1", reg.generation, caps=real_node(languages[::-1]), now_ms=T0 + 2
    )
    heartbeat = await command_calls(client) - before
    writes = await command_calls(client, SORTED_SET_WRITES) - writes_before
    assert not ack.moved
    assert await client.zcard(core.keys.key("pools")) == pools
    return [rounds, heartbeat, writes]


async def test_slot_changes_and_idle_heartbeats_cost_the_same_at_any_pair_count(
    private: AnyRedis, key_prefix: str
) -> None:
    one_pair = await commands_of(private, f"{key_prefix}a", ["de", "fr"])
    ten_thousand = await commands_of(private, f"{key_prefix}b", list(REAL_NODE_LANGUAGES))
    # the very same Redis commands for a node of 4 pairs and one of 10,000
    assert ten_thousand == one_pair
    assert one_pair[2] == 1  # the heartbeat's only sorted-set write: its node_alive refresh


async def test_lapsed_members_never_hide_a_live_node_with_free_slots(core: SchedulingCore) -> None:
    limit = core.config.select_scan_limit
    for i in range(limit * 2):
        await core.register_node(f"dead-{i:03d}", caps(), now_ms=T0)
    later = T0 + core.config.node_ttl_ms + 1
    await core.register_node("zz-live", caps(slots=8), now_ms=later)
    # twice scan_limit lapsed members, none swept yet, around the live one: each dispatch
    # (its window at another position) still finds it
    for i in range(4):
        assert (await core.dispatch(req(f"s{i}"), now_ms=later)).node_id == "zz-live"


async def test_a_large_pool_fills_evenly_by_sampling(core: SchedulingCore) -> None:
    nodes = core.config.select_sample_size * 5
    slots = 4
    for i in range(nodes):
        await core.register_node(f"n{i:03d}", caps(slots=slots), now_ms=T0)
    # three quarters of every slot, placed through samples of select_sample_size members
    for i in range(nodes * 3):
        request = msgspec.structs.replace(req(f"s{i}", i), job_id=f"job-{i:05d}")
        assert (await core.dispatch(request, now_ms=T0)).created
    running = [n.running for n in await core.list_nodes()]
    assert sum(running) == nodes * 3
    assert max(running) - min(running) <= 2, running


async def test_a_lapsed_node_that_changes_languages_keeps_no_old_pair(
    core: SchedulingCore,
) -> None:
    reg = await core.register_node("a", caps(("en",), ("zh", "ja")), now_ms=T0)
    await core.register_node("b", caps(("en",), ("zh",)), now_ms=T0)
    later = T0 + core.config.node_ttl_ms + 1
    await core.heartbeat("b", 1 + reg.generation, now_ms=later)
    # a lapsed; a dispatch for en:zh drops it from the pools, its en:ja member stays behind
    assert (await core.dispatch(req(tgt="zh"), now_ms=later)).node_id == "b"
    ack = await core.heartbeat("a", reg.generation, caps=caps(("en",), ("de",)), now_ms=later)
    assert ack.moved
    assert sorted((p.pair, p.node_id) for p in await core.list_pools()) == [
        ("en:de", "a"),
        ("en:zh", "b"),
    ]
    assert await core.client.zrange(core.keys.key("pools"), 0, -1) == ["en:de\0a", "en:zh\0b"]


async def test_a_nearly_full_large_pool_finds_its_last_free_slot(core: SchedulingCore) -> None:
    c = core.config
    nodes = (c.select_sample_size + c.select_scan_limit) * 2
    for i in range(nodes):
        await core.register_node(f"n{i:03d}", caps(slots=2), now_ms=T0)
    # every slot, the last ones found through node_free once the windows are all full
    for i in range(nodes * 2):
        request = msgspec.structs.replace(req(f"s{i}", i), job_id=f"job-{i:05d}")
        assert (await core.dispatch(request, now_ms=T0)).state == "dispatched", i
    assert sum(n.running for n in await core.list_nodes()) == nodes * 2
    # every node is busy now: the next job waits for a slot
    assert (await core.dispatch(req("one-more"), now_ms=T0)).state == "waiting"
