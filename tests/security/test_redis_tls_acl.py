"""The daemon's Redis clients over TLS with an ACL user, against a real TLS-only redis-server.

What must work: the ``redis.*`` keys (user, password, CA, client certificate, host-name check)
connect the daemon's client; ``serve`` runs on them. What must not: plain TCP, no or a foreign
client certificate, a server certificate from another CA or for another host, a wrong password,
the default user, keys outside the prefix, commands outside the daemon's ACL. Secrets stay out of
the daemon's log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis, connect
from cross_instance.redis_server import TlsFiles
from scheduler.cli import main
from scheduler.config import ConfigError, load_config
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import ROOT, Replica
from tests.security.tls_redis import CLUSTER_COMMANDS, DAEMON_ACL, DAEMON_COMMANDS, TlsAclRedis

pytestmark = pytest.mark.anyio


def daemon_config(server: TlsAclRedis, **overrides: Any) -> RedisConfig:
    """The daemon's Redis settings as an operator writes them: keys, no URL options."""
    assert server.pki is not None
    settings: dict[str, Any] = {
        "url": f"rediss://{server.host_port}/0",
        "key_prefix": "lingua",
        "username": "lingua",
        "password": server.password,
        "tls_ca_file": server.pki.ca_file,
        "tls_cert_file": server.pki.client.cert_file,
        "tls_key_file": server.pki.client.key_file,
        "retry_attempts": 0,
        "connect_timeout_ms": 2000,
    }
    return RedisConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def private_tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsAclRedis]:
    """Its own server: these tests fail logins on purpose, which the shared one's ACL LOG must
    never show."""
    server = TlsAclRedis(Path(tmp_path_factory.mktemp("tls-private"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def refused(private_tls_redis: TlsAclRedis) -> AsyncIterator[list[AnyRedis]]:
    """Clients of a test, closed after it."""
    clients: list[AnyRedis] = []
    yield clients
    for client in clients:
        await client.aclose()
    private_tls_redis.delete_prefix("lingua")


async def ping(config: RedisConfig, opened: list[AnyRedis]) -> Any:
    client = connect(config)
    opened.append(client)
    return await client.ping()


# -- what works ---------------------------------------------------------------------------------


async def test_the_config_keys_connect_over_tls_as_the_acl_user(
    private_tls_redis: TlsAclRedis, refused: list[AnyRedis]
) -> None:
    config = daemon_config(private_tls_redis)
    client = connect(config)
    refused.append(client)
    assert await client.ping()
    await client.set("lingua:probe", "1")
    # The default user is off: only "lingua" could have written it.
    admin = Redis.from_url(private_tls_redis.admin_url, decode_responses=True)
    try:
        assert await admin.get("lingua:probe") == "1"
        users = {c["user"] for c in await admin.client_list() if c.get("cmd") == "set"}
        assert users == {"lingua"}
    finally:
        await admin.aclose()
    # Blocking readers get their own client: the same TLS and credentials.
    assert await ping(msgspec.structs.replace(config, command_timeout_ms=100), refused)


async def test_credentials_in_the_url_work_as_well(
    private_tls_redis: TlsAclRedis, refused: list[AnyRedis]
) -> None:
    config = daemon_config(
        private_tls_redis,
        url=f"rediss://lingua:{private_tls_redis.password}@{private_tls_redis.host_port}/0",
        username="",
        password="",
    )
    assert await ping(config, refused)


async def test_tls_true_upgrades_a_redis_url(
    private_tls_redis: TlsAclRedis, refused: list[AnyRedis]
) -> None:
    config = daemon_config(
        private_tls_redis, url=f"redis://{private_tls_redis.host_port}/0", tls=True
    )
    assert await ping(config, refused)


async def test_the_host_name_check_is_on_by_default_and_can_be_turned_off(
    tmp_path: Path, private_tls_redis: TlsAclRedis
) -> None:
    assert private_tls_redis.pki is not None
    elsewhere = TlsAclRedis(
        tmp_path, pki=private_tls_redis.pki, server_tls=private_tls_redis.pki.wrong_host_server
    ).start()
    opened: list[AnyRedis] = []
    try:
        with pytest.raises(RedisConnectionError, match=r"(?i)hostname|match|certificate"):
            await ping(daemon_config(elsewhere), opened)
        assert await ping(daemon_config(elsewhere, tls_check_hostname=False), opened)
    finally:
        for client in opened:
            await client.aclose()
        elsewhere.stop()


# -- what is refused ----------------------------------------------------------------------------


async def test_plain_tcp_is_refused(
    private_tls_redis: TlsAclRedis, refused: list[AnyRedis]
) -> None:
    config = daemon_config(
        private_tls_redis,
        url=f"redis://{private_tls_redis.host_port}/0",
        tls_ca_file="",
        tls_cert_file="",
        tls_key_file="",
        command_timeout_ms=1000,
    )
    with pytest.raises((RedisConnectionError, TimeoutError)):
        await ping(config, refused)


@pytest.mark.parametrize("client_cert", ["none", "intruder"])
async def test_a_client_without_a_certificate_of_our_ca_is_refused(
    private_tls_redis: TlsAclRedis, refused: list[AnyRedis], client_cert: str
) -> None:
    assert private_tls_redis.pki is not None
    intruder: TlsFiles = private_tls_redis.pki.intruder
    cert, key = ("", "") if client_cert == "none" else (intruder.cert_file, intruder.key_file)
    config = daemon_config(private_tls_redis, tls_cert_file=cert, tls_key_file=key)
    with pytest.raises(RedisConnectionError):
        await ping(config, refused)


async def test_a_server_certificate_of_another_ca_is_refused(
    private_tls_redis: TlsAclRedis, refused: list[AnyRedis], tmp_path: Path
) -> None:
    assert private_tls_redis.pki is not None
    config = daemon_config(private_tls_redis, tls_ca_file=private_tls_redis.pki.intruder_ca_file)
    with pytest.raises(RedisConnectionError, match=r"(?i)certificate"):
        await ping(config, refused)


async def test_a_wrong_password_and_the_default_user_are_refused(
    private_tls_redis: TlsAclRedis, refused: list[AnyRedis]
) -> None:
    with pytest.raises(AuthenticationError):
        await ping(daemon_config(private_tls_redis, password="not-it"), refused)
    with pytest.raises(AuthenticationError):
        await ping(daemon_config(private_tls_redis, username="", password=""), refused)


async def test_the_daemon_user_reaches_only_its_prefix_and_its_commands(
    private_tls_redis: TlsAclRedis, refused: list[AnyRedis]
) -> None:
    client = connect(daemon_config(private_tls_redis))
    refused.append(client)
    await client.set("lingua:mine", "1")
    with pytest.raises(NoPermissionError):
        await client.set("someone-else:key", "1")
    with pytest.raises(NoPermissionError):
        await client.eval("return redis.call('GET', KEYS[1])", 1, "someone-else:key")
    for command in (["FLUSHALL"], ["KEYS", "*"], ["CONFIG", "GET", "*"], ["SCAN", "0"]):
        with pytest.raises(NoPermissionError):
            await client.execute_command(*command)
    with pytest.raises((NoPermissionError, ResponseError)):
        await client.publish("lingua:channel", "x")


def test_the_documented_acl_is_the_one_tested() -> None:
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert DAEMON_ACL in doc, "docs/security.md must show DAEMON_ACL verbatim"
    for command in DAEMON_COMMANDS + CLUSTER_COMMANDS:
        assert f"+{command}" in doc


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LINGUA_REDIS__TLS_CA_FILE": "/ca.pem"}, "TLS is off"),
        (
            {"LINGUA_REDIS_URL": "rediss://h:1/0", "LINGUA_REDIS__TLS_CERT_FILE": "/c.pem"},
            "tls_key_file go together",
        ),
        ({"LINGUA_REDIS__TLS": "true"}, "embedded Redis"),
        (
            {"LINGUA_REDIS_URL": "redis://u:p@h:1/0", "LINGUA_REDIS__PASSWORD": "x"},
            "not both",
        ),
    ],
)
def test_tls_and_credential_settings_that_cannot_apply_are_refused(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(environ=environ)
    assert str(caught.value).startswith("redis:")


# -- secrets stay out of the log ----------------------------------------------------------------


def test_serve_on_tls_and_acl_never_logs_the_password(
    tls_acl_redis: TlsAclRedis, tmp_path: Path
) -> None:
    replica = Replica(tls_acl_redis.url, "secret-keeper", "lingua", dict(FAST_SETTINGS)).start()
    try:
        assert replica.get("/readyz")[0] == 200
    finally:
        log_text = Path(replica.log_path).read_text()
        replica.stop()
    assert "replica ready" in log_text
    assert tls_acl_redis.password not in log_text
    tls_acl_redis.delete_prefix("lingua")


def test_serve_with_a_wrong_password_exits_without_logging_it(
    private_tls_redis: TlsAclRedis, tmp_path: Path
) -> None:
    assert private_tls_redis.pki is not None
    pki = private_tls_redis.pki
    wrong = "wrong-" + "p4ss" * 4
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUA_")}
    env.update(
        {
            "LINGUA_REDIS_URL": f"rediss://{private_tls_redis.host_port}/0",
            "LINGUA_REDIS__USERNAME": "lingua",
            "LINGUA_REDIS__PASSWORD": wrong,
            "LINGUA_REDIS__TLS_CA_FILE": pki.ca_file,
            "LINGUA_REDIS__TLS_CERT_FILE": pki.client.cert_file,
            "LINGUA_REDIS__TLS_KEY_FILE": pki.client.key_file,
            "LINGUA_REDIS__RETRY_ATTEMPTS": "0",
            "LINGUA_SERVER__HOST": "127.0.0.1",
            "LINGUA_SERVER__PORT": "0",
            "LINGUA_LOGGING__LEVEL": "DEBUG",
            "PYTHONPATH": str(ROOT),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert re.search(r"(?i)auth|password", output), output[-2000:]
    assert wrong not in output


@pytest.mark.parametrize("in_url", [False, True])
async def test_a_client_repr_never_shows_the_password(in_url: bool) -> None:
    secret = "s3cret-" + "x" * 8
    config = (
        RedisConfig(url=f"rediss://lingua:{secret}@127.0.0.1:1/0")
        if in_url
        else RedisConfig(url="rediss://127.0.0.1:1/0", username="lingua", password=secret)
    )
    client = connect(config)
    try:
        assert secret not in repr(client) + repr(client.connection_pool)
    finally:
        await client.aclose()


def test_config_show_does_not_print_the_redis_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINGUA_REDIS__PASSWORD", "s3cret-in-env")
    assert main(["config", "show"]) == 0
    assert "s3cret-in-env" not in capsys.readouterr().out


def test_config_show_masks_a_password_in_the_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINGUA_REDIS__URL", "rediss://lingua:s3cret-in-url@127.0.0.1:6380/0")
    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-in-url" not in out
    assert "rediss://lingua:***@127.0.0.1:6380/0" in out
