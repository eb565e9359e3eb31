"""The rooms scripts on a real Redis, one test per transition and refusal (standalone and Cluster).

Each script is called directly through the loader, as :class:`scheduler.rooms.Rooms` calls it,
and the room hash is read back: a success changes what its header says, a refusal changes
nothing, and every transition on a room that stays refreshes its expiry.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import RedisCluster

from cross_instance.config import RedisConfig
from cross_instance.lua import ScriptLibrary
from cross_instance.redis_client import AnyRedis, connect
from scheduler.rooms import RoomReply

pytestmark = pytest.mark.anyio

IDLE_MS = 60_000
SHORT_MS = 5_000  # a room's expiry set short, to see a transition push it back to IDLE_MS
META = json.dumps({"room_id": "r1", "created_ms": 1})
LIBRARY = ScriptLibrary("rooms")


@pytest.fixture(params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)])
async def client(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[AnyRedis]:
    if request.param == "standalone":
        conn = connect(RedisConfig(url=redis_url))
    else:
        conn = connect(
            RedisConfig(url=request.getfixturevalue("redis_cluster").url, mode="cluster")
        )
        if isinstance(conn, RedisCluster):
            await conn.initialize()
    try:
        yield conn
    finally:
        await conn.aclose()


@pytest.fixture
async def room(client: AnyRedis, key_prefix: str) -> AsyncIterator[str]:
    key = f"{key_prefix}:room:{{123456}}"
    yield key
    await client.delete(key)


def member(session: str, **fields: Any) -> str:
    return json.dumps({"participant_id": session, "session_id": session, **fields})


async def call(client: AnyRedis, script: str, room: str, *args: Any) -> tuple[RoomReply, Any]:
    reply = await LIBRARY.call(client, script, [room], args)
    body = json.loads(reply[1]) if len(reply) > 1 else None
    return RoomReply(int(reply[0])), body


async def make_room(client: AnyRedis, room: str, *sessions: str) -> None:
    await client.hset(room, mapping={"_meta": META, **{s: member(s) for s in sessions}})
    await client.pexpire(room, SHORT_MS)


async def assert_refreshed(client: AnyRedis, room: str) -> None:
    assert SHORT_MS < await client.pttl(room) <= IDLE_MS


async def test_create_opens_the_room_with_its_creator(client: AnyRedis, room: str) -> None:
    assert await call(client, "create_room", room, "s-A", member("s-A"), META, IDLE_MS) == (
        RoomReply.OK,
        None,
    )
    assert await client.hgetall(room) == {"_meta": META, "s-A": member("s-A")}
    assert 0 < await client.pttl(room) <= IDLE_MS


async def test_create_refuses_a_taken_code(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-A")
    reply = await call(client, "create_room", room, "s-B", member("s-B"), META, IDLE_MS)
    assert reply == (RoomReply.CODE_TAKEN, None)
    assert await client.hgetall(room) == {"_meta": META, "s-A": member("s-A")}
    assert await client.pttl(room) <= SHORT_MS


async def test_join_adds_the_member(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-A")
    assert (await call(client, "join_room", room, "s-B", member("s-B"), 2, IDLE_MS))[0] is (
        RoomReply.OK
    )
    assert set(await client.hkeys(room)) == {"_meta", "s-A", "s-B"}
    await assert_refreshed(client, room)


async def test_join_refuses_a_missing_room(client: AnyRedis, room: str) -> None:
    reply = await call(client, "join_room", room, "s-B", member("s-B"), 2, IDLE_MS)
    assert reply == (RoomReply.ROOM_NOT_FOUND, None)
    assert await client.exists(room) == 0


async def test_join_refuses_a_member_twice(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-A")
    renamed = member("s-A", display_name="renamed")
    reply = await call(client, "join_room", room, "s-A", renamed, 5, IDLE_MS)
    assert reply == (RoomReply.ALREADY_IN_ROOM, None)
    assert await client.hget(room, "s-A") == member("s-A")
    assert await client.pttl(room) <= SHORT_MS


async def test_join_refuses_a_full_room(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-A", "s-B")
    reply = await call(client, "join_room", room, "s-C", member("s-C"), 2, IDLE_MS)
    assert reply == (RoomReply.ROOM_FULL, None)
    assert set(await client.hkeys(room)) == {"_meta", "s-A", "s-B"}
    assert await client.pttl(room) <= SHORT_MS


async def test_leave_removes_the_member(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-A", "s-B")
    assert await call(client, "leave_room", room, "s-A", IDLE_MS) == (RoomReply.OK, {"left": 1})
    assert set(await client.hkeys(room)) == {"_meta", "s-B"}
    await assert_refreshed(client, room)


async def test_the_last_leave_deletes_the_room(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-A")
    assert await call(client, "leave_room", room, "s-A", IDLE_MS) == (RoomReply.OK, {"left": 0})
    assert await client.exists(room) == 0


async def test_leave_refuses_a_non_member(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-A")
    assert await call(client, "leave_room", room, "s-Z", IDLE_MS) == (RoomReply.NOT_A_MEMBER, None)
    assert set(await client.hkeys(room)) == {"_meta", "s-A"}
    assert await client.pttl(room) <= SHORT_MS


async def test_set_raw_voice_changes_one_preference(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-B")
    await client.hset(
        room, "s-A", member("s-A", display_name="Alice", raw_voice_preferences={"s-C": False})
    )
    assert await call(client, "set_raw_voice", room, "s-A", "s-B", "0", IDLE_MS) == (
        RoomReply.OK,
        None,
    )
    assert await call(client, "set_raw_voice", room, "s-A", "s-C", "1", IDLE_MS) == (
        RoomReply.OK,
        None,
    )
    record = json.loads(await client.hget(room, "s-A"))
    assert record == {
        "participant_id": "s-A",
        "session_id": "s-A",
        "display_name": "Alice",
        "raw_voice_preferences": {"s-B": False, "s-C": True},
    }
    assert await client.hget(room, "s-B") == member("s-B")
    await assert_refreshed(client, room)


async def test_set_raw_voice_refuses_a_non_member(client: AnyRedis, room: str) -> None:
    await make_room(client, room, "s-A")
    for session in ("s-Z", "_meta"):
        reply = await call(client, "set_raw_voice", room, session, "s-A", "0", IDLE_MS)
        assert reply == (RoomReply.NOT_A_MEMBER, None)
    assert await client.hgetall(room) == {"_meta": META, "s-A": member("s-A")}
    assert await client.pttl(room) <= SHORT_MS


async def test_set_raw_voice_never_creates_a_room(client: AnyRedis, room: str) -> None:
    reply = await call(client, "set_raw_voice", room, "s-A", "s-B", "0", IDLE_MS)
    assert reply == (RoomReply.NOT_A_MEMBER, None)
    assert await client.exists(room) == 0
