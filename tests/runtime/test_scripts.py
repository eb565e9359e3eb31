"""The lua/runtime scripts on their own, on standalone Redis and on the 3-master Cluster:
ownership claims and fenced releases, fenced acks, DLQ idempotency, one slot per script."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from cross_instance.config import RedisConfig
from cross_instance.envelope import RuntimeReply
from cross_instance.keys import CONSUMER_GROUP, RT_KEYS, RuntimeKeys
from cross_instance.lua import LUA_ROOT, ScriptLibrary
from cross_instance.redis_client import AnyRedis, connect
from cross_instance.runtime import call_script

pytestmark = pytest.mark.anyio

_HEADER_CODE = re.compile(r"\{(-?\d+) ([A-Z_]+)")
TTL = 60_000
ENDED_TTL = 60_000


@pytest.fixture(params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)])
def client_factory(request: pytest.FixtureRequest, redis_url: str) -> Callable[[], AnyRedis]:
    if request.param == "standalone":
        return lambda: connect(RedisConfig(url=redis_url))
    cluster = request.getfixturevalue("redis_cluster")
    return lambda: connect(RedisConfig(url=cluster.url, mode="cluster"))


@pytest.fixture
async def client(
    client_factory: Callable[[], AnyRedis], key_prefix: str
) -> AsyncIterator[AnyRedis]:
    redis = client_factory()
    if isinstance(redis, RedisCluster):
        await redis.initialize()
    yield redis
    keys = RuntimeKeys(key_prefix)
    for name in RT_KEYS:
        await redis.delete(keys.rt(name))
    await redis.delete(keys.dlq(), keys.dlq("dlq_index"))
    await redis.aclose()


async def register(redis: AnyRedis, keys: RuntimeKeys, instance: str, epoch: str) -> str:
    code, _ = await call_script(redis, keys, "register_presence", [instance, epoch, "{}", TTL, ""])
    assert code is RuntimeReply.OK
    return f"{instance}@{epoch}"


async def claim(redis: AnyRedis, keys: RuntimeKeys, token: str, ident: str = "n1") -> tuple:
    return await call_script(redis, keys, "claim_owner", ["node", ident, token, ""], kind="node")


async def release(redis: AnyRedis, keys: RuntimeKeys, token: str, ident: str = "n1") -> int:
    _, data = await call_script(
        redis, keys, "release_owner", ["node", token, ENDED_TTL, "", ident], kind="node"
    )
    return int(data["released"])


async def owner(redis: AnyRedis, keys: RuntimeKeys, ident: str = "n1") -> tuple[str, bool]:
    _, data = await call_script(redis, keys, "resolve_owner", [ident, ""], kind="node")
    return data.get("owner") or "", bool(data["live"])


async def test_newest_claim_wins_and_release_is_fenced(client: AnyRedis, key_prefix: str) -> None:
    keys = RuntimeKeys(key_prefix)
    a = await register(client, keys, "i-a", "e1")
    b = await register(client, keys, "i-b", "e1")
    assert await claim(client, keys, a) == (RuntimeReply.OK, {"previous_live": False})
    assert await claim(client, keys, a) == (RuntimeReply.REPLAYED, {})
    assert await claim(client, keys, b) == (RuntimeReply.OK, {"previous": a, "previous_live": True})
    assert await release(client, keys, a) == 0  # a's late clean-up: refused
    assert await owner(client, keys) == (b, True)
    counts = await client.hgetall(keys.rt("owned_count"))
    assert counts == {f"node|{b}": "1"}
    assert await release(client, keys, b) == 1
    assert await owner(client, keys) == ("", False)
    assert await client.hgetall(keys.rt("owned_count")) == {}


async def resolved(redis: AnyRedis, keys: RuntimeKeys, now: int | str = "") -> dict:
    _, data = await call_script(redis, keys, "resolve_owner", ["n1", now], kind="node")
    return data


async def test_a_released_id_is_ended_until_claimed_or_its_mark_lapses(
    client: AnyRedis, key_prefix: str
) -> None:
    keys = RuntimeKeys(key_prefix)
    a = await register(client, keys, "i-a", "e1")
    assert await resolved(client, keys) == {"live": False, "ended": False}  # never owned
    await claim(client, keys, a)
    # An owner that is not live (its presence lapsed) has not ended its targets.
    await client.zadd(keys.rt("alive"), {"i-a": 1})
    assert await resolved(client, keys) == {"owner": a, "live": False, "ended": False}
    assert await release(client, keys, a) == 1
    assert await resolved(client, keys) == {"live": False, "ended": True}
    until_ms = await client.zscore(keys.ended("node"), "n1")
    assert await resolved(client, keys, int(until_ms)) == {"live": False, "ended": False}
    # Claimed again (a node that reconnects under its id): no longer ended.
    await register(client, keys, "i-a", "e1")
    await claim(client, keys, a)
    assert await client.zscore(keys.ended("node"), "n1") is None
    # A release forgets the marks that have lapsed.
    await release(client, keys, a)
    later = int(until_ms) + ENDED_TTL
    _, data = await call_script(
        client, keys, "release_owner", ["node", a, ENDED_TTL, later], kind="node"
    )
    assert data == {"released": 0}
    assert await client.zcard(keys.ended("node")) == 0


async def test_a_replica_back_from_a_lapse_takes_nobody_over_for_a_ttl(
    client: AnyRedis, key_prefix: str
) -> None:
    keys = RuntimeKeys(key_prefix)
    a = await register(client, keys, "i-a", "e1")
    b = await register(client, keys, "i-b", "e1")
    now = int(await client.zscore(keys.rt("alive"), "i-b")) + 1  # both lapsed (a stall)

    async def refresh(instance: str, at: int) -> None:
        code, _ = await call_script(
            client, keys, "refresh_presence", [instance, "e1", "0", TTL, at]
        )
        assert code is RuntimeReply.OK

    async def begin(at: int) -> RuntimeReply:
        code, _ = await call_script(client, keys, "begin_takeover", [a, b, 5000, at])
        return code

    await refresh("i-b", now)  # b is back first; a still looks dead
    assert await begin(now) is RuntimeReply.TOO_SOON
    assert await begin(now + TTL - 1) is RuntimeReply.TOO_SOON
    await refresh("i-b", now + TTL - 1)  # on time: no new wait
    assert await begin(now + TTL) is RuntimeReply.OK  # a never came back within the TTL


async def test_a_restarted_replica_fences_its_old_epoch(client: AnyRedis, key_prefix: str) -> None:
    keys = RuntimeKeys(key_prefix)
    old = await register(client, keys, "i-a", "e1")
    await claim(client, keys, old)
    new = await register(client, keys, "i-a", "e2")  # same pod name, new start
    assert await owner(client, keys) == (old, False)  # the old epoch is not live any more
    assert (await claim(client, keys, old, "n2"))[0] is RuntimeReply.FENCED
    code, _ = await call_script(client, keys, "refresh_presence", ["i-a", "e1", "0", TTL, ""])
    assert code is RuntimeReply.FENCED
    assert (await claim(client, keys, new))[1] == {"previous": old, "previous_live": False}
    assert await release(client, keys, old) == 0
    assert await owner(client, keys) == (new, True)


async def test_stale_epoch_cannot_ack_after_takeover(client: AnyRedis, key_prefix: str) -> None:
    keys = RuntimeKeys(key_prefix)
    dead = await register(client, keys, "i-a", "e1")
    holder = await register(client, keys, "i-b", "e1")
    stream = keys.inbox(dead)
    await client.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    entry = await client.xadd(stream, {"env": "{}"})
    await client.xreadgroup(CONSUMER_GROUP, dead, {stream: ">"})
    # the dead replica is alive, so nobody may take it over yet
    code, _ = await call_script(client, keys, "begin_takeover", [dead, holder, 5000, ""])
    assert code is RuntimeReply.ALIVE
    await client.zadd(keys.rt("alive"), {"i-a": 1})  # its presence expired
    code, _ = await call_script(client, keys, "begin_takeover", [dead, holder, 5000, ""])
    assert code is RuntimeReply.OK
    third = await register(client, keys, "i-c", "e1")
    code, _ = await call_script(client, keys, "begin_takeover", [dead, third, 5000, ""])
    assert code is RuntimeReply.BUSY  # one holder at a time
    code, data = await call_script(
        client, keys, "take_entries", [CONSUMER_GROUP, holder, "0-0", 10], token=dead
    )
    assert [(e["id"], e["deliveries"]) for e in data["entries"]] == [(entry, 1)]
    # the stale replica wakes up: its ack, reclaim and presence refresh are refused
    code, _ = await call_script(
        client, keys, "ack_entry", [CONSUMER_GROUP, dead, entry], token=dead
    )
    assert code is RuntimeReply.FENCED
    code, _ = await call_script(
        client, keys, "reclaim_entries", [CONSUMER_GROUP, dead, 0, "0-0", 10, 5], token=dead
    )
    assert code is RuntimeReply.FENCED
    code, _ = await call_script(client, keys, "refresh_presence", ["i-a", "e1", "0", TTL, ""])
    assert code is RuntimeReply.FENCED
    assert (await client.xpending(stream, CONSUMER_GROUP))["pending"] == 1
    code, _ = await call_script(client, keys, "retire_inbox", [holder], token=dead)
    assert code is RuntimeReply.MORE
    code, _ = await call_script(
        client, keys, "ack_entry", [CONSUMER_GROUP, holder, entry], token=dead
    )
    assert code is RuntimeReply.OK
    code, _ = await call_script(client, keys, "retire_inbox", [holder], token=dead)
    assert code is RuntimeReply.OK and not await client.exists(stream)
    assert await client.xadd(stream, {"env": "{}"}, nomkstream=True) is None  # no resurrection
    code, _ = await call_script(client, keys, "end_takeover", [dead, holder])
    assert code is RuntimeReply.OK
    assert dead not in await client.hgetall(keys.rt("inboxes"))
    assert not await client.hexists(keys.rt("presence"), "i-a")


async def test_reclaim_counts_attempts_without_inflation(client: AnyRedis, key_prefix: str) -> None:
    keys = RuntimeKeys(key_prefix)
    me = await register(client, keys, "i-a", "e1")
    stream = keys.inbox(me)
    await client.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    first = await client.xadd(stream, {"env": "{}"})
    busy = await client.xadd(stream, {"env": "{}"})
    await client.xreadgroup(CONSUMER_GROUP, me, {stream: ">"})  # both delivered once

    async def reclaim(*inflight: str) -> dict:
        code, data = await call_script(
            client, keys, "reclaim_entries",
            [CONSUMER_GROUP, me, 0, "0-0", 10, 3, *inflight], token=me,
        )  # fmt: skip
        assert code is RuntimeReply.OK
        return data

    data = await reclaim(busy)  # `busy` is still in its handler: skipped, not counted
    assert [(e["id"], e["deliveries"]) for e in data["retry"]] == [(first, 2)]
    pending = {p["message_id"]: p["times_delivered"] for p in
               await client.xpending_range(stream, CONSUMER_GROUP, "-", "+", 10)}  # fmt: skip
    assert pending == {first: 2, busy: 1}
    data = await reclaim(busy)
    assert [(e["id"], e["deliveries"]) for e in data["retry"]] == [(first, 3)]
    data = await reclaim(busy)  # the cap (3) is reached: dead, not claimed again
    assert [(e["id"], e["deliveries"]) for e in data["dead"]] == [(first, 3)]
    assert "retry" not in data


async def test_dead_letter_once_per_message_and_trimmed(client: AnyRedis, key_prefix: str) -> None:
    keys = RuntimeKeys(key_prefix)

    async def add(mid: str) -> tuple:
        return await call_script(client, keys, "dead_letter", [mid, '{"x":1}', 3, 10])

    code, first = await add("m1")
    assert code is RuntimeReply.OK
    assert await add("m1") == (RuntimeReply.REPLAYED, first)
    for mid in ("m2", "m3", "m4"):
        await add(mid)
    assert await client.xlen(keys.dlq()) == 3  # exact maxlen, oldest (m1) gone
    assert sorted(await client.hkeys(keys.dlq("dlq_index"))) == ["m2", "m3", "m4"]
    index = await client.hgetall(keys.dlq("dlq_index"))
    code, data = await call_script(client, keys, "remove_dead", [index["m2"], "0-1"])
    assert data == {"removed": 1}
    assert sorted(await client.hkeys(keys.dlq("dlq_index"))) == ["m3", "m4"]


def test_every_script_uses_one_slot_and_declared_keys() -> None:
    library = ScriptLibrary("runtime")
    keys = RuntimeKeys("lingua")
    for name, script in library.scripts.items():
        declared = keys.for_script(script, token="pod-1@abc", kind="node")
        assert len(declared) == script.num_keys, name
        assert len({key_slot(k.encode()) for k in declared}) == 1, name
        assert all(k.startswith("lingua:") for k in declared)


def test_every_header_code_is_in_the_enum() -> None:
    found = set()
    for path in sorted((LUA_ROOT / "runtime").glob("*.lua")):
        header = path.read_text().split("\n\n", 1)[0]
        for number, name in _HEADER_CODE.findall(header):
            assert RuntimeReply(int(number)).name == name, f"{path.name}: {number} {name}"
            found.add(name)
    assert found == {c.name for c in RuntimeReply}


_LUA_CODE = re.compile(r"^local ([A-Z_]+) = (-?\d+)", re.MULTILINE)


def test_the_lua_code_names_and_the_enum_agree() -> None:
    source = (LUA_ROOT / "includes" / "runtime_codes.lua").read_text()
    named = {name: int(value) for name, value in _LUA_CODE.findall(source)}
    assert named == {code.name: code.value for code in RuntimeReply}


def test_runtime_scripts_reply_with_named_codes_only() -> None:
    for path in sorted((LUA_ROOT / "runtime").glob("*.lua")):
        body = path.read_text().split("\n\n", 1)[1]
        bare = re.findall(r"reply\(\s*-?\d", body)
        assert not bare, f"{path.name}: a reply code by number, not by name"
        assert '--@include "includes/runtime.lua"' in body, path.name
