"""The commands that change state (``dlq replay``, ``dlq purge``, ``drain``) as an operator runs
them, in a real ``lingua-scheduler`` process: without a terminal and without ``--yes`` they refuse
with exit 2 and one line saying to pass ``--yes``, before Redis is touched; on a terminal they ask,
and only ``yes`` goes ahead; what was done is logged and recorded with who and why, and
``ops-log`` lists the records, at most ``server.ops_audit_max_entries`` of them."""

from __future__ import annotations

import json
import os
import subprocess

import anyio
import pytest

from cross_instance.config import RedisConfig
from cross_instance.envelope import Envelope, Trail
from cross_instance.keys import RuntimeKeys
from cross_instance.redis_client import AnyRedis
from cross_instance.runtime import Runtime
from scheduler.ops_audit import audit_key
from tests.cli.conftest import COMMAND, ROOT, clean_env, one_line, run_cli
from tests.runtime.conftest import Recorder, fast_config

CHANGES = [
    ["dlq", "replay", "--all"],
    ["dlq", "replay", "some-id", "--reason", "retry"],
    ["dlq", "purge", "--all"],
    ["dlq", "purge", "a", "b"],
    ["drain", "some-replica"],
]


@pytest.mark.parametrize("argv", CHANGES)
def test_without_a_terminal_and_without_yes_it_refuses_with_exit_2(
    argv: list[str], closed_url: str
) -> None:
    # Redis is down: had the command touched it, the exit would be 3.
    done = run_cli(*argv, env=clean_env(LINGUA_REDIS_URL=closed_url))
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("lingua-scheduler: refusing to ") and "pass --yes" in line, line
    assert done.stdout == ""


def test_a_dry_run_needs_no_confirmation(closed_url: str) -> None:
    done = run_cli("dlq", "purge", "--all", "--dry-run", env=clean_env(LINGUA_REDIS_URL=closed_url))
    assert done.returncode == 3  # it went on to Redis, which is down


def env_for(redis_config: RedisConfig, **settings: str) -> dict[str, str]:
    return clean_env(
        LINGUA_REDIS_URL=redis_config.url,
        LINGUA_REDIS__KEY_PREFIX=redis_config.key_prefix,
        **settings,
    )


def on_a_terminal(argv: list[str], env: dict[str, str], answer: str) -> tuple[int, str, str]:
    """Run the CLI with a pseudo-terminal as stdin, type ``answer``; (exit, stdout, stderr)."""
    leader, follower = os.openpty()
    try:
        proc = subprocess.Popen(
            [*COMMAND, *argv], env=env, cwd=ROOT, stdin=follower,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        os.close(follower)
        os.write(leader, (answer + "\n").encode())
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out, err
    finally:
        os.close(leader)


async def add_dead_letter(redis_config: RedisConfig, message_id: str) -> None:
    env = Envelope(message_id=message_id, kind="frame", target_kind="node", target_id="n9",
                   payload="", created_ms=1)  # fmt: skip
    async with Runtime(redis_config, fast_config(instance_id="dlq-maker"), Recorder()) as runtime:
        await runtime.dead_letters.add(env, "no_owner", Trail(), owner="")


@pytest.mark.anyio
async def test_on_a_terminal_only_yes_goes_ahead_and_it_is_recorded(
    redis: AnyRedis, redis_config: RedisConfig
) -> None:
    env = env_for(redis_config, SUDO_USER="alice")
    await add_dead_letter(redis_config, "m-1")
    dlq = RuntimeKeys(redis_config.key_prefix).dlq()
    argv = ["dlq", "purge", "--all", "--reason", "poison from the 14:00 deploy"]

    code, _, err = await anyio.to_thread.run_sync(on_a_terminal, argv, env, "no")
    assert code == 1 and "type 'yes'" in err and "not purged" in err, err
    assert await redis.xlen(dlq) == 1 and await redis.xlen(audit_key(redis_config.key_prefix)) == 0

    code, out, err = await anyio.to_thread.run_sync(on_a_terminal, argv, env, "yes")
    assert code == 0 and "1 purged" in out, err
    assert await redis.xlen(dlq) == 0
    # The log line: who, on which host, why, what came of it.
    [logged] = [line for line in err.splitlines() if "operator action" in line]
    assert "dlq purge of all entries by " in logged and "(sudo from alice)" in logged
    assert "reason: poison from the 14:00 deploy" in logged and "1 purged" in logged

    done = await anyio.to_thread.run_sync(lambda: run_cli("ops-log", "--json", env=env))
    [entry] = json.loads(done.stdout)
    assert entry["action"] == "dlq purge" and entry["target"] == "all entries"
    assert entry["reason"] == "poison from the 14:00 deploy" and entry["sudo_user"] == "alice"
    assert entry["source"] == "cli" and entry["user"] and entry["host"] == os.uname().nodename
    assert entry["outcome"] == "1 purged, 0 missing" and entry["at_ms"] > 0
    done = await anyio.to_thread.run_sync(lambda: run_cli("ops-log", env=env))
    assert done.returncode == 0 and "dlq purge" in done.stdout.splitlines()[1]


@pytest.mark.anyio
async def test_the_audit_stream_keeps_at_most_its_bound(
    redis: AnyRedis, redis_config: RedisConfig
) -> None:
    env = env_for(redis_config, LINGUA_SERVER__OPS_AUDIT_MAX_ENTRIES="2")
    for name in ("first", "second", "third"):
        done = await anyio.to_thread.run_sync(
            lambda n=name: run_cli("dlq", "purge", n, "--yes", "--reason", n, env=env)
        )
        assert done.returncode == 1, done.stderr  # the entry is missing: still done, recorded
    assert await redis.xlen(audit_key(redis_config.key_prefix)) == 2
    done = await anyio.to_thread.run_sync(lambda: run_cli("ops-log", "--json", env=env))
    assert [e["reason"] for e in json.loads(done.stdout)] == ["third", "second"]
    done = await anyio.to_thread.run_sync(
        lambda: run_cli("ops-log", "--limit", "1", "--json", env=env)
    )
    assert [e["reason"] for e in json.loads(done.stdout)] == ["third"]


@pytest.mark.anyio
async def test_an_action_done_is_reported_done_when_its_audit_record_cannot_be_stored(
    redis: AnyRedis, redis_config: RedisConfig
) -> None:
    # The audit key holds something else (WRONGTYPE from Redis): the purge happened, so the
    # operator is told it did (exit 0), and the log line says the record is missing.
    env = env_for(redis_config)
    await add_dead_letter(redis_config, "m-1")
    await redis.set(audit_key(redis_config.key_prefix), "not a stream")
    done = await anyio.to_thread.run_sync(
        lambda: run_cli("dlq", "purge", "--all", "--yes", env=env)
    )
    assert done.returncode == 0 and "1 purged" in done.stdout, done.stderr
    assert "Traceback" not in done.stderr
    assert "audit record was not stored" in done.stderr
    assert await redis.xlen(RuntimeKeys(redis_config.key_prefix).dlq()) == 0
