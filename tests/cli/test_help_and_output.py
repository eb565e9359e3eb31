"""Help on every option of every command; tables with readable times, ``--json`` raw."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis
from scheduler.cli import build_parser, main
from scheduler.cli_format import ago, duration, relative, timestamp
from scheduler.config import SchedulingConfig
from scheduler.scheduling import SchedulingCore
from tests.cli.conftest import clean_env, run_cli
from tests.runtime.conftest import start_runtime
from tests.scheduling.conftest import caps, req
from tests.waiting import until


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


__all__ = ["start_runtime"]  # the fixture, shared with tests/runtime

COMMANDS = list(_commands(build_parser()))


def test_every_command_is_covered() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"serve", "nodes", "pools", "jobs", "ownership", "inbox", "drain", "dlq list",
            "dlq show", "dlq replay", "dlq purge", "config show", "ops-log"} <= names  # fmt: skip


@pytest.mark.parametrize(
    ("path", "parser"), COMMANDS, ids=[" ".join(p) or "-" for p, _ in COMMANDS]
)
def test_help_mentions_every_option_with_a_text(
    path: tuple[str, ...], parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, (path, action.dest)
        shown = action.option_strings[0] if action.option_strings else action.metavar
        assert shown and str(shown) in out, (path, action.dest)
        if action.option_strings:
            assert action.help.split("%")[0][:20] in " ".join(out.split()), (path, action.dest)


def test_serve_help_as_a_process() -> None:
    done = run_cli("serve", "--help", env=clean_env())
    assert done.returncode == 0
    for option in ("--host", "--port", "--redis-url", "--instance-id"):
        assert option in done.stdout
    assert "embedded Redis" in " ".join(done.stdout.split())


def test_readable_times() -> None:
    assert [duration(ms) for ms in (0, 850, 12_400, 185_000, 7_380_000, 368_000_000)] == [
        "0ms", "850ms", "12s", "3m05s", "2h03m", "4d06h"
    ]  # fmt: skip
    assert ago(12_000) == "12s ago" and ago(None) == "-"
    assert relative(1_000_025_000, 1_000_000_000) == "in 25s"
    assert relative(1_000_000_000, 1_000_003_000) == "3s ago"
    assert timestamp(1_796_058_131_000) == "2026-11-30 17:02:11Z"


@pytest.mark.anyio
async def test_tables_show_readable_times_and_json_the_raw_values(
    redis: AnyRedis, redis_config: RedisConfig
) -> None:
    core = SchedulingCore(redis, SchedulingConfig(), key_prefix=redis_config.key_prefix)
    await core.register_node("node-a", caps(("en",), ("zh",), 4))
    await core.dispatch(req())
    env = clean_env(
        LINGUA_REDIS_URL=redis_config.url, LINGUA_REDIS__KEY_PREFIX=redis_config.key_prefix
    )

    async def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return await anyio.to_thread.run_sync(lambda: run_cli(*argv, env=env))

    nodes = await cli("nodes")
    assert nodes.returncode == 0, nodes.stderr
    header, row = nodes.stdout.splitlines()
    assert "ALIVE_UNTIL" in header.split()
    assert re.search(r"\bin (\d+s|\d+m\d\ds)\b", row), row  # 45 s after the registration
    [raw] = json.loads((await cli("nodes", "--json")).stdout)
    assert isinstance(raw["alive_until_ms"], int) and raw["alive_until_ms"] > 10**12

    jobs = await cli("jobs", "--active")
    assert jobs.returncode == 0
    header, row = jobs.stdout.splitlines()
    assert header.split()[-1] == "DEADLINE" and re.search(r"\bin \d+s$", row), row
    [job] = json.loads((await cli("jobs", "--active", "--json")).stdout)
    assert isinstance(job["deadline_ms"], int) and job["deadline_ms"] > 10**12


@pytest.mark.anyio
async def test_dead_letters_show_readable_times_and_json_the_raw_values(
    start_runtime: Any, redis: AnyRedis, redis_config: RedisConfig
) -> None:
    env = clean_env(
        LINGUA_REDIS_URL=redis_config.url, LINGUA_REDIS__KEY_PREFIX=redis_config.key_prefix
    )

    async def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return await anyio.to_thread.run_sync(lambda: run_cli(*argv, env=env))

    async with start_runtime("a") as (a, _):
        lost = await a.send_to_session("s-gone", "frame", "x")
        await until(lambda: a.metrics.dead_lettered.labels("no_owner")._value.get() == 1)

    listing = await cli("dlq", "list")
    assert listing.returncode == 0
    header, row = listing.stdout.splitlines()
    assert header.split()[-2:] == ["DEAD", "LAST_ERROR"]
    assert re.search(rf"{lost.message_id} +no_owner .* \d+(ms|s) ago +-$", row), row
    [raw] = json.loads((await cli("dlq", "list", "--json")).stdout)
    assert isinstance(raw["age_ms"], int)

    shown = await cli("dlq", "show", lost.message_id)
    assert shown.returncode == 0
    fields = dict(line.split(None, 1) for line in shown.stdout.splitlines())
    moment = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(\d+(ms|s) ago\)"
    assert re.fullmatch(moment, fields["dead_lettered_ms"]), fields
    assert re.fullmatch(moment, fields["envelope.created_ms"]), fields
    assert re.fullmatch(r"\d+(ms|s)", fields["age_ms"]), fields
    raw_entry = json.loads((await cli("dlq", "show", lost.message_id, "--json")).stdout)
    assert raw_entry["envelope"]["created_ms"] > 10**12
