"""A representative part of the end-to-end suite, every run, against the TLS-only, ACL-only Redis.

The tests are the e2e suite's own (imported, so they are the same tests): the happy path with the
session and the node on different replicas, a node failover mid-job, and the HTTP routes (the
operator API reads what no script reads: a command missing from the ACL shows there). ``redis_url`` is the
``tls_acl_redis`` server's (tests/security/conftest.py): the replicas get its TLS files and the
daemon's user as ``redis.*`` keys, and after each test Redis's ACL LOG must be empty. The whole
suite runs the same way with ``LINGUA_TEST_REDIS_TLS_ACL=1 pytest tests/e2e``; the DLQ path is in
test_dlq_on_tls_acl.py.

The replicas get a longer presence TTL than the e2e suite's 1.5 s: neither test here depends on
it, and on a starved machine a TLS reconnect can outlast its refresh bound, so that a peer takes a
live replica's inbox over.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import FAST_SETTINGS, cluster_prefix, pair
from tests.e2e.daemons import Replica
from tests.e2e.test_flows import (
    test_http_routes,
    test_node_disconnect_mid_job_fails_over,
    test_session_and_node_on_different_replicas,
)

__all__ = [
    "cluster_prefix",
    "pair",
    "test_http_routes",
    "test_node_disconnect_mid_job_fails_over",
    "test_session_and_node_on_different_replicas",
]

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TOLERANT = {
    **FAST_SETTINGS,
    "LINGUA_RUNTIME__PRESENCE_TTL_MS": "6000",
    "LINGUA_RUNTIME__PRESENCE_REFRESH_MS": "1000",
}


@pytest.fixture(scope="module")
def replicas(redis_url: str, cluster_prefix: str) -> Iterator[list[Replica]]:
    """As tests/e2e/conftest.py's, with ``TOLERANT`` settings."""
    started: list[Replica] = []
    try:
        for i in range(3):
            started.append(Replica(redis_url, f"r{i}", cluster_prefix, dict(TOLERANT)).start())
        yield started
    finally:
        for replica in started:
            replica.stop()
