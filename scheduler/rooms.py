"""Rooms shared by every replica (original-protocol.md §5).

The original kept rooms in one process's memory, so members on different replicas never met. Here a
room is one Redis hash (`_meta` plus one participant per member), changed only through the scripts
of ``lua/rooms/``, expiring after ``session.room_idle_ms`` without activity. Messages to members go
through the cross-instance routing like any other session message.

Every rooms script replies ``{code}`` or ``{code, json}``: ``code >= 0`` a success, ``code < 0`` a
refusal that changed nothing. The codes are :class:`RoomReply`, named in Lua by
``lua/includes/room_codes.lua`` (a test keeps both in step); they are the rooms family's own
numbers (-1 is ROOM_NOT_FOUND here, NOT_REGISTERED in the scheduling core).

Error tree (``code`` and ``message`` are what the ``room_error`` frame carries)::

    RoomError                  a room operation was refused; nothing changed
    ├── InvalidRoomCode        INVALID_ROOM_CODE  the code is not six digits (no script ran)
    ├── NoFreeRoomCode         INTERNAL_ERROR     every attempt drew a taken code
    ├── RoomCodeTaken          INTERNAL_ERROR     CODE_TAKEN: create retries with another code
    ├── RoomNotFound           ROOM_NOT_FOUND     no room has the code
    ├── AlreadyInRoom          ALREADY_IN_ROOM    the session is a member already
    ├── RoomFull               ROOM_FULL          the room has max_room_members members
    └── NotAMember             ROOM_NOT_FOUND     NOT_A_MEMBER: the session is not in that room
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import msgspec

from cross_instance.lua import ScriptLibrary
from scheduler.config import SessionConfig

__all__ = [
    "AlreadyInRoom",
    "InvalidRoomCode",
    "NoFreeRoomCode",
    "NotAMember",
    "Participant",
    "RoomCodeTaken",
    "RoomError",
    "RoomFull",
    "RoomNotFound",
    "RoomReply",
    "Rooms",
    "room_error_for",
]


class RoomReply(IntEnum):
    OK = 0
    ROOM_NOT_FOUND = -1
    ALREADY_IN_ROOM = -2
    ROOM_FULL = -3
    NOT_A_MEMBER = -4
    CODE_TAKEN = -5


class RoomError(Exception):
    """A room operation was refused; ``code`` is the wire code of ``room_error``."""

    reply: RoomReply | None = None
    wire_code = "INTERNAL_ERROR"
    sentence = "the room operation failed"

    def __init__(self, message: str | None = None) -> None:
        self.code = self.wire_code
        self.message = message or self.sentence
        super().__init__(self.message)


class InvalidRoomCode(RoomError):
    wire_code = "INVALID_ROOM_CODE"
    sentence = "a room code is six digits"


class NoFreeRoomCode(RoomError):
    sentence = "no free room code"


class RoomCodeTaken(RoomError):
    reply = RoomReply.CODE_TAKEN
    sentence = "the room code is taken"


class RoomNotFound(RoomError):
    reply = RoomReply.ROOM_NOT_FOUND
    wire_code = "ROOM_NOT_FOUND"
    sentence = "room does not exist"


class AlreadyInRoom(RoomError):
    reply = RoomReply.ALREADY_IN_ROOM
    wire_code = "ALREADY_IN_ROOM"
    sentence = "already in this room"


class RoomFull(RoomError):
    reply = RoomReply.ROOM_FULL
    wire_code = "ROOM_FULL"
    sentence = "room is full"


class NotAMember(RoomError):
    reply = RoomReply.NOT_A_MEMBER
    wire_code = "ROOM_NOT_FOUND"
    sentence = "not a member of this room"


_ERRORS: dict[RoomReply, type[RoomError]] = {
    cls.reply: cls
    for cls in (RoomCodeTaken, RoomNotFound, AlreadyInRoom, RoomFull, NotAMember)
    if cls.reply is not None
}


def room_error_for(code: int, script: str) -> RoomError:
    """The typed error for a refusal code of the rooms script ``script``."""
    reply = RoomReply(code)
    cls = _ERRORS.get(reply)
    if cls is None:
        raise AssertionError(f"{script}: reply code {reply.name} is not a refusal")
    return cls()


class Participant(msgspec.Struct, omit_defaults=True):
    participant_id: str
    session_id: str
    joined_at: str
    display_name: str | None = None
    preferred_lang: str | None = None
    raw_voice_preferences: dict[str, bool] | None = None


class _Left(msgspec.Struct):
    left: int


_decode_participant = msgspec.json.Decoder(Participant).decode
_decode_left = msgspec.json.Decoder(_Left).decode
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

    async def _call(self, script: str, code: str, args: Sequence[Any]) -> bytes:
        """Run one rooms script on room ``code``; its json body, or the typed refusal."""
        reply = await self.scripts.call(self.client, script, [self.key(code)], args)
        status = RoomReply(int(reply[0]))
        if status < 0:
            raise room_error_for(status, script)
        body = reply[1] if len(reply) > 1 else "{}"
        return body.encode() if isinstance(body, str) else bytes(body)

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
            try:
                await self._call(
                    "create_room",
                    code,
                    [creator.session_id, _encode(creator), meta, self.config.room_idle_ms],
                )
            except RoomCodeTaken:
                continue
            return code, room_id
        raise NoFreeRoomCode()

    async def join(self, code: str, member: Participant) -> list[Participant]:
        if not (len(code) == 6 and code.isdigit()):
            raise InvalidRoomCode()
        await self._call(
            "join_room",
            code,
            [
                member.session_id,
                _encode(member),
                self.config.max_room_members,
                self.config.room_idle_ms,
            ],
        )
        return await self.members(code)

    async def leave(self, code: str, session_id: str) -> list[Participant]:
        """Remove ``session_id``; returns the members left (empty when the room is gone).

        Leaving a room one is not in changes nothing and returns the current members.
        """
        try:
            body = await self._call("leave_room", code, [session_id, self.config.room_idle_ms])
        except NotAMember:
            return await self.members(code)
        return [] if _decode_left(body).left == 0 else await self.members(code)

    async def members(self, code: str) -> list[Participant]:
        fields: dict[str, str] = await self.client.hgetall(self.key(code))
        members = [_decode_participant(v) for k, v in fields.items() if k != "_meta"]
        return sorted(members, key=lambda p: p.joined_at)

    async def set_raw_voice(
        self, code: str, session_id: str, target: str, receive: bool
    ) -> list[Participant]:
        """``session_id`` turns ``target``'s raw voice on or off for itself; the members after.

        The change is made inside one script, so overlapping changes of one member are all kept.
        """
        await self._call(
            "set_raw_voice",
            code,
            [session_id, target, "1" if receive else "0", self.config.room_idle_ms],
        )
        return await self.members(code)

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
