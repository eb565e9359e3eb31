"""``mode = cluster`` over TLS with the ACL user: a Redis Cluster of three TLS-only masters (the
cluster bus on TLS too), the daemon's ACL plus ``CLUSTER_COMMANDS``, and a ``serve`` replica carrying
an utterance from a browser to a node and its result back. Every node's ACL LOG stays empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import SimBrowser, SimNode
from tests.e2e.conftest import FAST_SETTINGS, peers
from tests.e2e.daemons import Replica
from tests.security.tls_redis import TlsAclCluster, TlsAclRedis

__all__ = ["peers"]

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
