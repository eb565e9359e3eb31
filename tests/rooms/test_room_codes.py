"""Rooms reply codes: the Lua names, the script headers and RoomReply agree; refusals are typed."""

from __future__ import annotations

import re

from cross_instance.lua import LUA_ROOT
from scheduler.rooms import RoomError, RoomReply, room_error_for

# "  ROOM_FULL = -3," in lua/includes/room_codes.lua
_LUA_CODE = re.compile(r"^\s+([A-Z_]+) = (-?\d+),$", re.MULTILINE)
# "{-3 ROOM_FULL}" / "{0 OK, ...}" in a header comment
_HEADER_CODE = re.compile(r"\{(-?\d+) ([A-Z_]+)")
_BARE_REPLY = re.compile(r"reply\(-?\d|return -?\d+\s*$|return \{?-?\d", re.MULTILINE)


def test_lua_names_the_codes_of_the_enum() -> None:
    source = (LUA_ROOT / "includes" / "room_codes.lua").read_text()
    lua_codes = {name: int(number) for name, number in _LUA_CODE.findall(source)}
    assert lua_codes == {code.name: code.value for code in RoomReply}


def test_every_header_code_is_in_the_enum() -> None:
    found = {}
    for path in sorted((LUA_ROOT / "rooms").glob("*.lua")):
        header, body = path.read_text().split("\n\n", 1)
        for number, name in _HEADER_CODE.findall(header):
            found[name] = int(number)
            assert RoomReply(int(number)).name == name, f"{path.name}: {number} {name}"
        assert not _BARE_REPLY.search(body), f"{path.name} replies with a bare number"
    assert set(found) == {c.name for c in RoomReply}


def test_every_refusal_maps_to_a_typed_error() -> None:
    for code in RoomReply:
        if code < 0:
            error = room_error_for(code, "x")
            assert isinstance(error, RoomError) and error.reply is code
            assert error.code and error.message
