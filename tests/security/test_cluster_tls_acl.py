"""``mode = cluster`` and ``mode = sentinel`` over TLS with the ACL user.

Cluster: three TLS-only masters (the cluster bus on TLS too), the daemon's ACL plus
``CLUSTER_COMMANDS``; every node's ACL LOG stays empty. Sentinel: a TLS-only Sentinel watching the
TLS+ACL Redis. In both a ``serve`` replica carries an utterance from a browser to a node and its
result back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import SimBrowser, SimNode
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica
from tests.security.tls_redis import TlsAclCluster, TlsAclRedis, TlsSentinel

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.cluster]


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory, tls_acl_redis: TlsAclRedis
) -> Iterator[TlsAclCluster]:
    assert tls_acl_redis.pki is not None
    cluster = TlsAclCluster(Path(tmp_path_factory.mktemp("tls-cluster")), tls_acl_redis.pki)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


async def test_an_utterance_through_a_replica_on_a_tls_acl_cluster(
    tls_cluster: TlsAclCluster, peers: Any
) -> None:
    settings = {**FAST_SETTINGS, "LINGUA_REDIS__MODE": "cluster"}
    replica = Replica(tls_cluster.url, "on-cluster", "lingua", settings).start()
    try:
        node = await peers(SimNode(replica.ws + "/ws/node", (["fzclu-a"], ["fzclu-b"])))
        await node.register()
        browser = await peers(SimBrowser(replica.ws + "/ws/session", "fzclu-a", "fzclu-b"))
        await browser.init()
        await browser.speak(5)
        job = await node.wait_type("job_assign")
        await node.send(node.result_for(job))
        result = await browser.wait_type("translation_result")
        assert result["job_id"] == job["job_id"]
    finally:
        replica.stop()
    assert tls_cluster.acl_denials() == []


async def test_an_utterance_through_a_replica_that_finds_its_redis_through_a_tls_sentinel(
    tmp_path: Path, tls_acl_redis: TlsAclRedis, peers: Any
) -> None:
    sentinel = TlsSentinel(tmp_path, tls_acl_redis).start()
    settings = {
        **FAST_SETTINGS,
        "LINGUA_REDIS__MODE": "sentinel",
        "LINGUA_REDIS__SENTINELS": f'["127.0.0.1:{sentinel.port}"]',
        "LINGUA_REDIS__SENTINEL_MASTER": "mymaster",
    }
    # The URL is not used in sentinel mode; its TLS files and credentials reach the replica as
    # redis.* keys (and keep serve from starting an embedded Redis).
    replica = Replica(tls_acl_redis.url, "via-sentinel", "lingua", settings)
    before = sentinel.connections_received()
    try:
        replica.start()
        assert sentinel.connections_received() > before  # it asked the Sentinel
        node = await peers(SimNode(replica.ws + "/ws/node", (["fzsen-a"], ["fzsen-b"])))
        await node.register()
        browser = await peers(SimBrowser(replica.ws + "/ws/session", "fzsen-a", "fzsen-b"))
        await browser.init()
        await browser.speak(5)
        job = await node.wait_type("job_assign")
        await node.send(node.result_for(job))
        assert (await browser.wait_type("translation_result"))["job_id"] == job["job_id"]
    finally:
        replica.stop()
        sentinel.stop()
        tls_acl_redis.delete_prefix("lingua")
