from __future__ import annotations

from pathlib import Path

import pytest

from cross_instance.lua import LUA_ROOT, ScriptError, ScriptLibrary, load_script

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lua"


def test_includes_are_inlined_once_and_keys_counted() -> None:
    library = ScriptLibrary("good", root=FIXTURES)
    script = library.scripts["set_sum"]
    assert script.num_keys == 1
    assert script.key_names == ("target",)
    assert script.source.count("local function add") == 1
    assert "already included" in script.source


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("cycle", "circular include"),
        ("missing", "include not found: includes/nope.lua"),
        ("gaps", "without gaps"),
    ],
)
def test_malformed_scripts_fail_loudly(folder: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        load_script(FIXTURES / folder / "bad.lua", FIXTURES)


def test_every_shipped_script_loads_and_declares_its_keys() -> None:
    for folder in (p for p in LUA_ROOT.iterdir() if p.is_dir() and p.name != "includes"):
        for path in folder.glob("*.lua"):
            script = load_script(path)
            assert script.num_keys >= 1, f"{path.name} declares no KEYS"
            body = script.source
            # Keys reach scripts only through KEYS[]: no key names built from the prefix in Lua.
            assert "..':'.." not in body.replace(" ", ""), f"{path.name} builds a key name"


@pytest.mark.anyio
async def test_call_survives_script_flush_and_checks_key_count(redis, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    library = ScriptLibrary("good", root=FIXTURES)
    await library.load(redis)
    key = f"{key_prefix}:sum"
    assert await library.call(redis, "set_sum", [key], [2, 3]) == 5
    await redis.script_flush()
    assert await library.call(redis, "set_sum", [key], [4, 5]) == 9
    assert library.reloads == 1
    assert await redis.get(key) == "9"
    with pytest.raises(ScriptError, match="declares 1 keys"):
        await library.call(redis, "set_sum", [key, key], [1, 1])


@pytest.mark.anyio
async def test_call_survives_redis_restart(fresh_redis) -> None:  # type: ignore[no-untyped-def]
    from cross_instance.config import RedisConfig
    from cross_instance.redis_client import connect

    client = connect(RedisConfig(url=fresh_redis.url))
    try:
        library = ScriptLibrary("good", root=FIXTURES)
        await library.load(client)
        assert await library.call(client, "set_sum", ["k"], [1, 1]) == 2
        fresh_redis.restart()
        assert await library.call(client, "set_sum", ["k"], [1, 2]) == 3
        assert library.reloads == 1
    finally:
        await client.aclose()
