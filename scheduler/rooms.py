"""Rooms shared by every replica (original-protocol.md §5).

The original kept rooms in one process's memory, so members on different replicas never met. Here a
room is one Redis hash (`_meta` plus one participant per member) and an entry in the rooms'
deadline ZSET, changed only through the scripts of ``lua/rooms/``. Any activity pushes the deadline
back by ``session.room_idle_ms``: a join, a member update, and (through :class:`RoomPresence`, at
most once per ``session.room_touch_interval_ms`` per member) a member's audio, a relayed WebRTC
message, a result fanned out. Each replica's sweep expires the rooms past their deadline
(:meth:`Rooms.expire_due`); the replica that expires a room sends its members ``room_expired``.
Messages to members go through the cross-instance routing like any other session message.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec

from cross_instance.clock import now_ms
from cross_instance.lua import ScriptLibrary
from scheduler.config import SessionConfig

__all__ = ["EXPIRED_MESSAGE", "Participant", "RoomError", "RoomPresence", "Rooms"]


class Participant(msgspec.Struct, omit_defaults=True):
    participant_id: str
    session_id: str
    joined_at: str
    display_name: str | None = None
    preferred_lang: str | None = None
    raw_voice_preferences: dict[str, bool] | None = None


class RoomError(Exception):
    """A room operation was refused; ``code`` is the wire code of ``room_error``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_JOIN_ERRORS = {
    -1: ("ROOM_NOT_FOUND", "This room does not exist or has expired."),
    -2: ("ALREADY_IN_ROOM", "You are already in this room."),
    -3: ("ROOM_FULL", "This room is full."),
}
_NOT_A_MEMBER = ("ROOM_NOT_FOUND", "You are not in this room.")
# `room_expired.message`, shown to the members (the original's said "30 minutes", whatever the
# configured idle time was).
EXPIRED_MESSAGE = "The room was closed because nobody spoke in it for a while."
_decode_participant = msgspec.json.Decoder(Participant).decode
_encode = msgspec.json.Encoder().encode


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Rooms:
    def __init__(self, client: Any, key_prefix: str, config: SessionConfig) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.config = config
        self.scripts = ScriptLibrary("rooms")

    def key(self, code: str) -> str:
        # Every room key shares the {rooms} hash tag with the deadline ZSET: one slot, so each
        # script may touch both (rooms are few and small; one shard holds them all).
        return f"{self.key_prefix}:{{rooms}}:room:{code}"

    @property
    def deadlines_key(self) -> str:
        return f"{self.key_prefix}:{{rooms}}:room_deadlines"

    def participant(
        self, session_id: str, display_name: str | None, preferred_lang: str | None
    ) -> Participant:
        return Participant(
            participant_id=session_id,
            session_id=session_id,
            joined_at=_now_rfc3339(),
            display_name=display_name,
            preferred_lang=preferred_lang,
        )

    async def create(self, creator: Participant) -> tuple[str, str]:
        """Create a room with ``creator`` in it; returns ``(room_code, room_id)``."""
        room_id = secrets.token_hex(16)
        meta = _encode(
            {"room_id": room_id, "created_ms": int(datetime.now(UTC).timestamp() * 1000)}
        )
        for _ in range(self.config.room_code_attempts):
            code = str(100000 + secrets.randbelow(900000))
            created = await self.scripts.call(
                self.client,
                "create_room",
                [self.key(code), self.deadlines_key],
                [
                    creator.session_id,
                    _encode(creator),
                    meta,
                    self.config.room_idle_ms,
                    code,
                    now_ms(),
                ],
            )
            if created == 1:
                return code, room_id
        raise RoomError("INTERNAL_ERROR", "No room could be created just now. Please try again.")

    async def join(self, code: str, member: Participant) -> list[Participant]:
        if not (len(code) == 6 and code.isdigit()):
            raise RoomError("INVALID_ROOM_CODE", "A room code is six digits.")
        reply = await self.scripts.call(
            self.client,
            "join_room",
            [self.key(code), self.deadlines_key],
            [
                member.session_id,
                _encode(member),
                self.config.max_room_members,
                self.config.room_idle_ms,
                code,
                now_ms(),
            ],
        )
        if reply != 1:
            raise RoomError(*_JOIN_ERRORS[int(reply)])
        return await self.members(code)

    async def leave(self, code: str, session_id: str) -> list[Participant]:
        """Remove ``session_id``; returns the members left (empty when the room is gone).

        Leaving a room one is not in changes nothing and returns the current members.
        """
        left = int(
            await self.scripts.call(
                self.client,
                "leave_room",
                [self.key(code), self.deadlines_key],
                [session_id, self.config.room_idle_ms, code, now_ms()],
            )
        )
        return [] if left == 0 else await self.members(code)

    async def members(self, code: str) -> list[Participant]:
        fields: dict[str, str] = await self.client.hgetall(self.key(code))
        members = [_decode_participant(v) for k, v in fields.items() if k != "_meta"]
        return sorted(members, key=lambda p: p.joined_at)

    async def set_raw_voice(
        self, code: str, session_id: str, target: str, receive: bool
    ) -> list[Participant]:
        members = {p.session_id: p for p in await self.members(code)}
        me = members.get(session_id)
        if me is None:
            raise RoomError(*_NOT_A_MEMBER)
        prefs = dict(me.raw_voice_preferences or {})
        prefs[target] = receive
        updated = msgspec.structs.replace(me, raw_voice_preferences=prefs)
        reply = await self.scripts.call(
            self.client,
            "update_member",
            [self.key(code), self.deadlines_key],
            [session_id, _encode(updated), self.config.room_idle_ms, code, now_ms()],
        )
        if reply != 1:
            raise RoomError(*_NOT_A_MEMBER)
        members[session_id] = updated
        return sorted(members.values(), key=lambda p: p.joined_at)

    async def touch(self, code: str, now: int) -> bool:
        """Activity in the room: its deadline moves to ``now + room_idle_ms``. False: the room
        is gone (expired or emptied)."""
        touched = await self.scripts.call(
            self.client,
            "touch_room",
            [self.deadlines_key],
            [code, self.config.room_idle_ms, now],
        )
        return int(touched) == 1

    async def expire_due(self, now: int) -> list[tuple[str, list[str]]]:
        """Expire up to ``session.room_expiry_batch`` rooms past their deadline; returns each
        expired room's code and members (to send ``room_expired``). A room another replica
        expired first, or one touched since it was read, is not returned."""
        due: list[str] = await self.client.zrangebyscore(
            self.deadlines_key, "-inf", now, start=0, num=self.config.room_expiry_batch
        )
        expired: list[tuple[str, list[str]]] = []
        for code in due:
            members = await self.scripts.call(
                self.client, "expire_room", [self.key(code), self.deadlines_key], [code, now]
            )
            if members:
                expired.append((code, [str(m) for m in members]))
        return expired

    async def keep_alive(self, presence: RoomPresence, now: int) -> bool:
        """Activity of ``presence``'s session in its room: touch the room if the session has not
        in the last ``room_touch_interval_ms``. False: the room is gone."""
        if not presence.touch_due(now):
            return True
        return await self.touch(presence.code, now)

    @staticmethod
    def target_languages(
        members: list[Participant], speaker: str, speaker_tgt: str
    ) -> dict[str, list[str]]:
        """Room mode: target language -> the sessions that get its result, one job each.

        Each other member gets its ``preferred_lang``, or the speaker's ``tgt_lang`` when it has
        none (the browser never sends one: without this, results went to the speaker only). The
        speaker gets its own ``tgt_lang``'s result when that language is dispatched anyway, else
        the first language's (it sees its recognized text either way; no job only for it).
        """
        targets: dict[str, list[str]] = {}
        for member in members:
            if member.session_id != speaker:
                lang = member.preferred_lang or speaker_tgt
                targets.setdefault(lang, []).append(member.session_id)
        if not targets:
            return {speaker_tgt: [speaker]}
        own = speaker_tgt if speaker_tgt in targets else next(iter(targets))
        targets[own].insert(0, speaker)
        return targets

    @staticmethod
    def accepts_raw_voice(members: list[Participant], receiver: str, sender: str) -> bool:
        """A WebRTC relay reaches ``receiver`` unless it turned off ``sender``'s raw voice (§5)."""
        for member in members:
            if member.session_id == receiver:
                return (member.raw_voice_preferences or {}).get(sender, True)
        return False


class RoomPresence:
    """One session's membership in a room, on the session's replica: the room's code and when
    this session last touched it (so its audio touches Redis at most once per interval)."""

    def __init__(self, code: str, touch_interval_ms: int) -> None:
        self.code = code
        self.touch_interval_ms = touch_interval_ms
        self.touched_ms: int | None = None

    def touch_due(self, now: int) -> bool:
        """True (and the interval restarts) when this session's activity should touch the room."""
        if self.touched_ms is not None and now - self.touched_ms < self.touch_interval_ms:
            return False
        self.touched_ms = now
        return True
