from __future__ import annotations

import anyio
import pytest

from cross_instance.clock import now_ms
from scheduler.config import SessionConfig
from scheduler.rooms import Participant, RoomError, RoomPresence, Rooms

pytestmark = pytest.mark.anyio


def rooms_for(redis, key_prefix: str, **settings: int) -> Rooms:  # type: ignore[no-untyped-def]
    return Rooms(redis, key_prefix, SessionConfig(**settings))


async def test_create_join_leave_and_expiry(redis, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    rooms = rooms_for(redis, key_prefix)
    alice = rooms.participant("s-A", "Alice", "zh")
    before = now_ms()
    code, room_id = await rooms.create(alice)
    assert len(code) == 6 and code.isdigit() and room_id
    deadline = await redis.zscore(rooms.deadlines_key, code)
    assert (
        before + SessionConfig().room_idle_ms <= deadline <= now_ms() + SessionConfig().room_idle_ms
    )
    members = await rooms.join(code, rooms.participant("s-B", "Bob", "en"))
    assert [m.session_id for m in members] == ["s-A", "s-B"]
    assert Rooms.target_languages(members, "s-A", "en") == {"en": ["s-A", "s-B"]}
    assert [m.session_id for m in await rooms.leave(code, "s-A")] == ["s-B"]
    assert await rooms.leave(code, "s-B") == []
    assert await redis.exists(rooms.key(code)) == 0
    assert await redis.zscore(rooms.deadlines_key, code) is None


async def test_activity_pushes_the_deadline_back_and_an_idle_room_expires_once(
    redis, key_prefix: str
) -> None:  # type: ignore[no-untyped-def]
    rooms = rooms_for(redis, key_prefix, room_idle_ms=1000, room_touch_interval_ms=100)
    code, _ = await rooms.create(rooms.participant("s-A", None, None))
    await rooms.join(code, rooms.participant("s-B", None, None))
    start = now_ms()
    # Active: touched every half room_idle, it is never due, even long after room_idle.
    for step in range(1, 6):
        assert await rooms.touch(code, start + step * 500)
        assert await rooms.expire_due(start + step * 500 + 999) == []
    last = start + 5 * 500
    [(expired, members)] = await rooms.expire_due(last + 1000)
    assert (expired, sorted(members)) == (code, ["s-A", "s-B"])
    assert await redis.exists(rooms.key(code)) == 0
    # Expired once: no second notification, no touch brings it back, a late join is refused.
    assert await rooms.expire_due(last + 5000) == []
    assert not await rooms.touch(code, last + 5000)
    with pytest.raises(RoomError) as gone:
        await rooms.join(code, rooms.participant("s-C", None, None))
    assert gone.value.code == "ROOM_NOT_FOUND"


def test_a_member_touches_its_room_at_most_once_per_interval() -> None:
    presence = RoomPresence("123456", touch_interval_ms=1000)
    assert presence.touch_due(10_000)
    assert not any(presence.touch_due(10_000 + t) for t in range(0, 1000, 50))
    assert presence.touch_due(11_000)


def test_room_targets_without_preferred_languages_reach_every_member() -> None:
    members = [
        Participant(participant_id=s, session_id=s, joined_at=str(i), preferred_lang=lang)
        for i, (s, lang) in enumerate([("s-A", None), ("s-B", None), ("s-C", "de")])
    ]
    # The browser sends no preferred_lang: B hears the speaker's target; A sees it too.
    assert Rooms.target_languages(members, "s-A", "en") == {"en": ["s-A", "s-B"], "de": ["s-C"]}
    # Every other member has its own language: the speaker rides along with the first.
    only_de = [m for m in members if m.session_id != "s-B"]
    assert Rooms.target_languages(only_de, "s-A", "en") == {"de": ["s-A", "s-C"]}
    # Alone in the room: its own target.
    assert Rooms.target_languages(members[:1], "s-A", "en") == {"en": ["s-A"]}


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
