"""Rooms shared by every replica (original-protocol.md §5).

The original kept rooms in one process's memory, so members on different replicas never met. Here a
room is one Redis hash (`_meta` plus one participant per member), changed only through the scripts
of ``lua/rooms/``, expiring after ``session.room_idle_ms`` without activity. Messages to members go
through the cross-instance routing like any other session message.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec

from cross_instance.lua import ScriptLibrary
from scheduler.config import SessionConfig

__all__ = ["Participant", "RoomError", "Rooms"]


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
    -1: ("ROOM_NOT_FOUND", "room does not exist"),
    -2: ("ALREADY_IN_ROOM", "already in this room"),
    -3: ("ROOM_FULL", "room is full"),
}
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
        return f"{self.key_prefix}:room:{{{code}}}"

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
                [self.key(code)],
                [creator.session_id, _encode(creator), meta, self.config.room_idle_ms],
            )
            if created == 1:
                return code, room_id
        raise RoomError("INTERNAL_ERROR", "no free room code")

    async def join(self, code: str, member: Participant) -> list[Participant]:
        if not (len(code) == 6 and code.isdigit()):
            raise RoomError("INVALID_ROOM_CODE", "a room code is six digits")
        reply = await self.scripts.call(
            self.client,
            "join_room",
            [self.key(code)],
            [
                member.session_id,
                _encode(member),
                self.config.max_room_members,
                self.config.room_idle_ms,
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
                self.client, "leave_room", [self.key(code)], [session_id, self.config.room_idle_ms]
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
            raise RoomError("ROOM_NOT_FOUND", "not a member of this room")
        prefs = dict(me.raw_voice_preferences or {})
        prefs[target] = receive
        updated = msgspec.structs.replace(me, raw_voice_preferences=prefs)
        reply = await self.scripts.call(
            self.client,
            "update_member",
            [self.key(code)],
            [session_id, _encode(updated), self.config.room_idle_ms],
        )
        if reply != 1:
            raise RoomError("ROOM_NOT_FOUND", "not a member of this room")
        members[session_id] = updated
        return sorted(members.values(), key=lambda p: p.joined_at)

    @staticmethod
    def target_languages(members: list[Participant], speaker: str) -> dict[str, list[str]]:
        """Distinct ``preferred_lang`` of the other members -> their session ids (§3.5, room mode)."""
        targets: dict[str, list[str]] = {}
        for member in members:
            if member.session_id != speaker and member.preferred_lang:
                targets.setdefault(member.preferred_lang, []).append(member.session_id)
        return targets

    @staticmethod
    def accepts_raw_voice(members: list[Participant], receiver: str, sender: str) -> bool:
        """A WebRTC relay reaches ``receiver`` unless it turned off ``sender``'s raw voice (§5)."""
        for member in members:
            if member.session_id == receiver:
                return (member.raw_voice_preferences or {}).get(sender, True)
        return False
