"""Rooms shared by every replica (docs/protocol.md; the original's §5).

The original kept rooms in one process's memory, so members on different replicas never met. Here a
room is one Redis hash (`_meta` plus one participant per member) and an entry in the rooms'
deadline ZSET, changed only through the scripts of ``lua/rooms/``. Any activity pushes the deadline
back by ``session.room_idle_ms``: a join, a member update, and (through :class:`RoomPresence`, at
most once per ``session.room_touch_interval_ms`` per member) a member's audio, a relayed WebRTC
message, a result fanned out. Each replica's sweep expires the rooms past their deadline
(:meth:`Rooms.expire_due`); the replica that expires a room sends its members ``room_expired``.
Messages to members go through the cross-instance routing like any other session message.

Every rooms script replies ``{code}`` or ``{code, json}``: ``code >= 0`` a success, ``code < 0`` a
refusal that changed nothing. The codes are :class:`RoomReply`, named in Lua by
``lua/includes/room_codes.lua`` (a test keeps both in step); they are the rooms family's own
numbers (-1 is ROOM_NOT_FOUND here, NOT_REGISTERED in the scheduling core).

Error tree (``code`` and ``message`` are what the ``room_error`` frame carries; the message is a
sentence a person reads)::

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

from cross_instance.clock import now_ms
from cross_instance.lua import ScriptLibrary
from scheduler.config import SessionConfig

__all__ = [
    "EXPIRED_MESSAGE",
    "AlreadyInRoom",
    "InvalidRoomCode",
    "NoFreeRoomCode",
    "NotAMember",
    "Participant",
    "RoomCodeTaken",
    "RoomError",
    "RoomFull",
    "RoomNotFound",
    "RoomPresence",
    "RoomReply",
    "Rooms",
    "room_error_for",
]


class RoomReply(IntEnum):
    OK = 0
    NOT_DUE = 1
    ROOM_NOT_FOUND = -1
    ALREADY_IN_ROOM = -2
    ROOM_FULL = -3
    NOT_A_MEMBER = -4
    CODE_TAKEN = -5


class RoomError(Exception):
    """A room operation was refused; ``code`` is the wire code of ``room_error``."""

    reply: RoomReply | None = None
    wire_code = "INTERNAL_ERROR"
    sentence = "The room operation failed. Please try again."

    def __init__(self, message: str | None = None) -> None:
        self.code = self.wire_code
        self.message = message or self.sentence
        super().__init__(self.message)


class InvalidRoomCode(RoomError):
    wire_code = "INVALID_ROOM_CODE"
    sentence = "A room code is six digits."


class NoFreeRoomCode(RoomError):
    sentence = "No room could be created just now. Please try again."


class RoomCodeTaken(RoomError):
    reply = RoomReply.CODE_TAKEN
    sentence = "The room code is taken."


class RoomNotFound(RoomError):
    reply = RoomReply.ROOM_NOT_FOUND
    wire_code = "ROOM_NOT_FOUND"
    sentence = "This room does not exist or has expired."


class AlreadyInRoom(RoomError):
    reply = RoomReply.ALREADY_IN_ROOM
    wire_code = "ALREADY_IN_ROOM"
    sentence = "You are already in this room."


class RoomFull(RoomError):
    reply = RoomReply.ROOM_FULL
    wire_code = "ROOM_FULL"
    sentence = "This room is full."


class NotAMember(RoomError):
    reply = RoomReply.NOT_A_MEMBER
    wire_code = "ROOM_NOT_FOUND"
    sentence = "You are not in this room."


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


class _Expired(msgspec.Struct):
    members: list[str] = []


# `room_expired.message`, shown to the members (the original's said "30 minutes", whatever the
# configured idle time was).
EXPIRED_MESSAGE = "The room was closed because nobody spoke in it for a while."
_decode_participant = msgspec.json.Decoder(Participant).decode
_decode_left = msgspec.json.Decoder(_Left).decode
_decode_expired = msgspec.json.Decoder(_Expired).decode
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

    async def _call(
        self, script: str, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[RoomReply, bytes]:
        """Run one rooms script; its success code and json body, or the typed refusal."""
        reply = await self.scripts.call(self.client, script, keys, args)
        status = RoomReply(int(reply[0]))
        if status < 0:
            raise room_error_for(status, script)
        body = reply[1] if len(reply) > 1 else "{}"
        return status, body.encode() if isinstance(body, str) else bytes(body)

    def _room_keys(self, code: str) -> list[str]:
        return [self.key(code), self.deadlines_key]

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
                    self._room_keys(code),
                    [
                        creator.session_id,
                        _encode(creator),
                        meta,
                        self.config.room_idle_ms,
                        code,
                        now_ms(),
                    ],
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
            self._room_keys(code),
            [
                member.session_id,
                _encode(member),
                self.config.max_room_members,
                self.config.room_idle_ms,
                code,
                now_ms(),
            ],
        )
        return await self.members(code)

    async def leave(self, code: str, session_id: str) -> list[Participant]:
        """Remove ``session_id``; returns the members left (empty when the room is gone).

        Leaving a room one is not in changes nothing and returns the current members.
        """
        try:
            _, body = await self._call(
                "leave_room",
                self._room_keys(code),
                [session_id, self.config.room_idle_ms, code, now_ms()],
            )
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
            self._room_keys(code),
            [
                session_id,
                target,
                "1" if receive else "0",
                self.config.room_idle_ms,
                code,
                now_ms(),
            ],
        )
        return await self.members(code)

    async def touch(self, code: str, now: int) -> bool:
        """Activity in the room: its deadline moves to ``now + room_idle_ms``. False: the room
        is gone (expired or emptied)."""
        try:
            await self._call(
                "touch_room", [self.deadlines_key], [code, self.config.room_idle_ms, now]
            )
        except RoomNotFound:
            return False
        return True

    async def expire_due(self, now: int) -> list[tuple[str, list[str]]]:
        """Expire up to ``session.room_expiry_batch`` rooms past their deadline; returns each
        expired room's code and members (to send ``room_expired``). A room another replica
        expired first, or one touched since it was read, is not returned."""
        due: list[str] = await self.client.zrangebyscore(
            self.deadlines_key, "-inf", now, start=0, num=self.config.room_expiry_batch
        )
        expired: list[tuple[str, list[str]]] = []
        for code in due:
            try:
                status, body = await self._call("expire_room", self._room_keys(code), [code, now])
            except RoomNotFound:
                continue
            if status is RoomReply.OK:
                expired.append((code, _decode_expired(body).members))
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
