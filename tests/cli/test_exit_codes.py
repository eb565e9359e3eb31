"""Exit codes and one-line errors of a real ``lingua-scheduler`` process: 3 when Redis cannot be
reached or the config is invalid, 2 for bad usage (before Redis is touched), 1 when the command
ran and found a problem, 0 otherwise; never a traceback for an operational error."""

from __future__ import annotations

import json
import socket
from importlib.metadata import version
from pathlib import Path

import anyio
import pytest

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis
from tests.cli.conftest import clean_env, one_line, run_cli
from tests.security.tls_redis import TlsAclRedis


@pytest.mark.parametrize(
    "argv",
    [
        ["nodes"],
        ["jobs", "--active", "--json"],
        ["ownership"],
        ["inbox"],
        ["dlq", "list"],
        ["dlq", "show", "some-id"],
        ["drain", "some-replica", "--yes"],
        ["dlq", "purge", "--all", "--yes"],
        ["ops-log"],
    ],
)
def test_an_unreachable_redis_is_one_line_and_exit_3(argv: list[str], closed_url: str) -> None:
    done = run_cli(*argv, env=clean_env(LINGUA_REDIS_URL=closed_url))
    assert done.returncode == 3, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("lingua-scheduler: cannot reach Redis at " + closed_url), line
    assert "LINGUA_REDIS_URL" in line
    assert done.stdout == ""


def test_a_url_that_is_not_redis_is_a_config_error_naming_the_key() -> None:
    done = run_cli("nodes", env=clean_env(LINGUA_REDIS_URL="http://x"))
    assert done.returncode == 3
    line = one_line(done.stderr)
    assert "redis.url" in line and "redis://" in line and "'http://x'" in line


def test_a_password_in_the_url_is_not_printed(closed_url: str) -> None:
    secret_url = closed_url.replace("redis://", "redis://:hunter2@")
    done = run_cli("nodes", env=clean_env(LINGUA_REDIS_URL=secret_url))
    assert done.returncode == 3
    assert "hunter2" not in done.stderr and ":***@" in one_line(done.stderr)


def test_an_invalid_config_value_is_exit_3_naming_the_key(closed_url: str) -> None:
    env = clean_env(LINGUA_REDIS_URL=closed_url, LINGUA_SCHEDULING__MAX_ATTEMPTS="0")
    done = run_cli("nodes", env=env)
    assert done.returncode == 3
    assert "scheduling.max_attempts" in one_line(done.stderr)


def test_no_redis_and_no_running_serve_says_what_to_do(tmp_path: Path) -> None:
    done = run_cli("ownership", env=clean_env(), cwd=tmp_path)
    assert done.returncode == 3
    line = one_line(done.stderr)
    assert "make run" in line and "LINGUA_REDIS_URL" in line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["nodes", "--limit", "-1"], "--limit"),
        (["jobs", "--limit", "many"], "--limit"),
        (["pools", "--pair", "enzh"], "--pair"),
        (["dlq", "list", "--older-than", "soon"], "--older-than"),
        (["dlq", "list", "--reason", "no-owner"], "--reason"),
        (["dlq", "purge"], "--all"),
        (["dlq", "replay", "some-id", "--all"], "--all"),
        (["frobnicate"], "frobnicate"),
        (["nodes", "--colour"], "--colour"),
    ],
)
def test_bad_usage_is_exit_2_before_redis_is_touched(
    argv: list[str], named: str, closed_url: str
) -> None:
    # Redis is down: any attempt to use it would end in 3, not 2.
    done = run_cli(*argv, env=clean_env(LINGUA_REDIS_URL=closed_url))
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert named in line and "--help" in line


def test_a_missing_dlq_entry_is_exit_1(redis_config: RedisConfig) -> None:
    env = clean_env(
        LINGUA_REDIS_URL=redis_config.url, LINGUA_REDIS__KEY_PREFIX=redis_config.key_prefix
    )
    done = run_cli("dlq", "show", "no-such-message", env=env)
    assert done.returncode == 1
    assert "no DLQ entry no-such-message" in one_line(done.stderr)
    done = run_cli("drain", "no-such-replica", "--yes", env=env)
    assert done.returncode == 1
    one_line(done.stderr)


def test_version() -> None:
    done = run_cli("--version", env=clean_env())
    assert done.returncode == 0
    assert done.stdout.strip() == f"lingua-scheduler {version('lingua-scheduler')}"


def test_serve_with_redis_down_is_one_json_log_line_and_exit_3(closed_url: str) -> None:
    done = run_cli("serve", "--port", "0", env=clean_env(LINGUA_REDIS_URL=closed_url))
    assert done.returncode == 3
    entry = json.loads(one_line(done.stderr))
    assert entry["level"] == "ERROR" and entry["exit_code"] == 3
    assert entry["msg"].startswith(f"cannot reach Redis at {closed_url}")
    assert entry["instance_id"]  # generated: none configured


def test_serve_with_a_url_that_is_not_redis_names_the_key() -> None:
    done = run_cli("serve", "--redis-url", "http://x", env=clean_env(LINGUA_INSTANCE_ID="r-7"))
    assert done.returncode == 3
    entry = json.loads(one_line(done.stderr))
    assert entry["msg"].startswith("configuration error: redis.url:")
    assert entry["instance_id"] == "r-7"


@pytest.mark.anyio
async def test_serve_on_a_port_in_use_says_so_in_one_json_line(
    redis: AnyRedis, redis_config: RedisConfig
) -> None:
    # ``redis`` removes what the replica wrote before it found the port taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(LINGUA_REDIS_URL=redis_config.url,
                        LINGUA_REDIS__KEY_PREFIX=redis_config.key_prefix)  # fmt: skip
        argv = ("serve", "--host", "127.0.0.1", "--port", str(port))
        done = await anyio.to_thread.run_sync(lambda: run_cli(*argv, env=env))
    assert done.returncode == 3, done.stderr
    *started, last = [json.loads(line) for line in done.stderr.splitlines()]
    assert "Traceback" not in done.stderr and all(e["level"] == "INFO" for e in started)
    assert last["level"] == "ERROR" and last["msg"].startswith("cannot listen:")
    assert "address already in use" in last["msg"] and "server.port" in last["msg"]


def test_serve_without_a_redis_server_binary_says_so_in_one_json_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "redis-server")
    done = run_cli("serve", env=clean_env(LINGUA_REDIS__EMBEDDED_BINARY=missing), cwd=tmp_path)
    assert done.returncode == 3
    entry = json.loads(one_line(done.stderr))
    assert entry["msg"].startswith("cannot start the embedded Redis:") and missing in entry["msg"]


@pytest.mark.parametrize("command", [["nodes"], ["serve", "--port", "0"]])
def test_sentinel_mode_without_a_url_asks_the_sentinels_and_starts_no_embedded_redis(
    command: list[str], closed_url: str, tmp_path: Path
) -> None:
    # an embedded Redis would be a server nobody else sees; the binary is missing so that
    # starting one would show
    sentinel = closed_url.removeprefix("redis://").split("/")[0]
    env = clean_env(
        LINGUA_REDIS__MODE="sentinel",
        LINGUA_REDIS__SENTINELS=json.dumps([sentinel]),
        LINGUA_REDIS__EMBEDDED_BINARY=str(tmp_path / "redis-server"),
        LINGUA_REDIS__RETRY_ATTEMPTS="0",
    )
    done = run_cli(*command, env=env, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    line = one_line(done.stderr)
    message = (
        json.loads(line)["msg"]
        if command[0] == "serve"
        else line.removeprefix("lingua-scheduler: ")
    )
    assert "embedded" not in message
    assert message.startswith(
        f"cannot reach the master 'mymaster' of the Sentinels {sentinel} (redis.sentinels): "
        "no Sentinel named its address; check redis.sentinels"
    ), message


@pytest.mark.parametrize("command", [["nodes"], ["serve", "--port", "0"]])
def test_a_wrong_redis_password_says_so_in_one_line_and_exit_3(
    command: list[str], tls_acl_redis: TlsAclRedis
) -> None:
    url = tls_acl_redis.url_for("lingua", "not-the-password")
    done = run_cli(*command, env=clean_env(LINGUA_REDIS_URL=url))
    assert done.returncode == 3, done.stderr
    line = one_line(done.stderr)
    assert "refused our credentials" in line and "not-the-password" not in line, line
