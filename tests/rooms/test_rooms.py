from __future__ import annotations

import anyio
import pytest

from scheduler.config import SessionConfig
from scheduler.rooms import RoomError, Rooms

pytestmark = pytest.mark.anyio


def rooms_for(redis, key_prefix: str, **settings: int) -> Rooms:  # type: ignore[no-untyped-def]
    return Rooms(redis, key_prefix, SessionConfig(**settings))


async def test_create_join_leave_and_expiry(redis, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    rooms = rooms_for(redis, key_prefix)
    alice = rooms.participant("s-A", "Alice", "zh")
    code, room_id = await rooms.create(alice)
    assert len(code) == 6 and code.isdigit() and room_id
    ttl = await redis.pttl(rooms.key(code))
    assert 0 < ttl <= SessionConfig().room_idle_ms
    members = await rooms.join(code, rooms.participant("s-B", "Bob", "en"))
    assert [m.session_id for m in members] == ["s-A", "s-B"]
    assert Rooms.target_languages(members, "s-A") == {"en": ["s-B"]}
    assert [m.session_id for m in await rooms.leave(code, "s-A")] == ["s-B"]
    assert await rooms.leave(code, "s-B") == []
    assert await redis.exists(rooms.key(code)) == 0


async def test_join_errors_change_nothing(redis, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    rooms = rooms_for(redis, key_prefix, max_room_members=2)
    code, _ = await rooms.create(rooms.participant("s-A", None, None))
    with pytest.raises(RoomError) as missing:
        await rooms.join(
            "123456" if code != "123456" else "654321", rooms.participant("s-B", None, None)
        )
    assert missing.value.code == "ROOM_NOT_FOUND"
    with pytest.raises(RoomError) as invalid:
        await rooms.join("12ab", rooms.participant("s-B", None, None))
    assert invalid.value.code == "INVALID_ROOM_CODE"
    await rooms.join(code, rooms.participant("s-B", None, None))
    with pytest.raises(RoomError) as again:
        await rooms.join(code, rooms.participant("s-B", "renamed", None))
    assert again.value.code == "ALREADY_IN_ROOM"
    with pytest.raises(RoomError) as full:
        await rooms.join(code, rooms.participant("s-C", None, None))
    assert full.value.code == "ROOM_FULL"
    members = await rooms.members(code)
    assert [(m.session_id, m.display_name) for m in members] == [("s-A", None), ("s-B", None)]
    assert await rooms.leave(code, "s-C") == members


async def test_concurrent_joins_respect_the_limit(redis, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    rooms = rooms_for(redis, key_prefix, max_room_members=5)
    code, _ = await rooms.create(rooms.participant("s-0", None, None))
    outcomes: list[str] = []

    async def join(i: int) -> None:
        try:
            await rooms.join(code, rooms.participant(f"s-{i}", None, None))
            outcomes.append("ok")
        except RoomError as exc:
            outcomes.append(exc.code)

    async with anyio.create_task_group() as tg:
        for i in range(1, 20):
            tg.start_soon(join, i)
    assert outcomes.count("ok") == 4 and outcomes.count("ROOM_FULL") == 15
    assert len(await rooms.members(code)) == 5


async def test_raw_voice_preference(redis, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    rooms = rooms_for(redis, key_prefix)
    code, _ = await rooms.create(rooms.participant("s-A", None, None))
    await rooms.join(code, rooms.participant("s-B", None, None))
    members = await rooms.set_raw_voice(code, "s-B", "s-A", False)
    assert not Rooms.accepts_raw_voice(members, receiver="s-B", sender="s-A")
    assert Rooms.accepts_raw_voice(members, receiver="s-A", sender="s-B")
    assert not Rooms.accepts_raw_voice(members, receiver="s-Z", sender="s-A")
    with pytest.raises(RoomError):
        await rooms.set_raw_voice(code, "s-Z", "s-A", False)
    assert Rooms.accepts_raw_voice(await rooms.members(code), receiver="s-A", sender="s-B")


async def test_overlapping_raw_voice_changes_are_all_kept(redis, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    rooms = rooms_for(redis, key_prefix)
    code, _ = await rooms.create(rooms.participant("s-A", "Alice", "en"))
    senders = ["s-B", "s-C", "s-D", "s-E"]
    for sender in senders:
        await rooms.join(code, rooms.participant(sender, None, None))
    # four changes of one member in flight at once: each must survive the others
    async with anyio.create_task_group() as tg:
        for sender in senders:
            tg.start_soon(rooms.set_raw_voice, code, "s-A", sender, False)
    [me] = [m for m in await rooms.members(code) if m.session_id == "s-A"]
    assert me.raw_voice_preferences == dict.fromkeys(senders, False)
    assert (me.display_name, me.preferred_lang) == ("Alice", "en")
