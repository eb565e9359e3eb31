"""Reply codes: the Lua names, the headers and ReplyCode agree; every key shares one slot."""

from __future__ import annotations

import re

from redis.crc import key_slot

from cross_instance.lua import LUA_ROOT, ScriptLibrary
from scheduler.scheduling import ReplyCode, SchedulingError, SchedulingKeys
from scheduler.scheduling.codes import error_for

# "{-3 NO_POOL}" / "{0 OK, ...}" in a header comment
_HEADER_CODE = re.compile(r"\{(-?\d+) ([A-Z_]+)")
# "  NO_POOL = -3," in lua/includes/scheduling_codes.lua
_LUA_CODE = re.compile(r"^\s+([A-Z_]+) = (-?\d+),$", re.MULTILINE)
# a reply built from a bare number instead of a CODE name
_BARE_REPLY = re.compile(r"reply\(-?\d|return -?\d+\s*$|return \{-?\d", re.MULTILINE)


def test_lua_names_the_codes_of_the_enum() -> None:
    source = (LUA_ROOT / "includes" / "scheduling_codes.lua").read_text()
    lua_codes = {name: int(number) for name, number in _LUA_CODE.findall(source)}
    assert lua_codes == {code.name: code.value for code in ReplyCode}


def test_no_script_replies_with_a_bare_number() -> None:
    includes = ("fence", "failover_job", "jobs", "pools", "progress_job", "select_node", "waiting")
    paths = [*sorted((LUA_ROOT / "scheduling").glob("*.lua"))]
    paths += [LUA_ROOT / "includes" / f"{name}.lua" for name in includes]
    for path in paths:
        body = path.read_text().split("\n\n", 1)[1]
        assert not _BARE_REPLY.search(body), f"{path.name} replies with a bare number"


def test_every_header_code_is_in_the_enum() -> None:
    found = {}
    for path in sorted((LUA_ROOT / "scheduling").glob("*.lua")):
        header = path.read_text().split("\n\n", 1)[0]
        for number, name in _HEADER_CODE.findall(header):
            found[name] = int(number)
            assert ReplyCode(int(number)).name == name, f"{path.name}: {number} {name}"
    # and every enum member is used by some script
    assert set(found) == {c.name for c in ReplyCode}


def test_every_refusal_maps_to_a_typed_error() -> None:
    for code in ReplyCode:
        if code < 0:
            error = error_for(code, "x")
            assert isinstance(error, SchedulingError) and error.code is code


def test_all_keys_share_one_slot_and_the_prefix() -> None:
    keys = SchedulingKeys("lingua", "d7")
    all_keys = keys.all()
    assert all(k.startswith("lingua:{d7}:") for k in all_keys)
    assert len({key_slot(k.encode()) for k in all_keys}) == 1


def test_scripts_get_keys_in_declared_order() -> None:
    library = ScriptLibrary("scheduling")
    keys = SchedulingKeys("p", "d")
    for name, script in library.scripts.items():
        declared = keys.for_script(script)
        assert len(declared) == script.num_keys, name
    assert keys.for_script(library.scripts["end_session"]) == [
        "p:{d}:sessions",
        "p:{d}:session_expiry",
    ]
