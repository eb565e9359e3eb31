"""A representative part of the end-to-end suite, every run, against the TLS-only, ACL-only Redis.

The tests are the e2e suite's own (imported, so they are the same tests): the happy path with the
session and the node on different replicas, and a node failover mid-job. ``redis_url`` is the
``tls_acl_redis`` server's (tests/security/conftest.py): the replicas get its TLS files and the
daemon's user as ``redis.*`` keys, and after each test Redis's ACL LOG must be empty. The whole
suite runs the same way with ``LINGUA_TEST_REDIS_TLS_ACL=1 pytest tests/e2e``; the DLQ path is in
test_dlq_on_tls_acl.py.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import cluster_prefix, pair, peers, replicas
from tests.e2e.test_flows import (
    test_node_disconnect_mid_job_fails_over,
    test_session_and_node_on_different_replicas,
)

__all__ = [
    "cluster_prefix",
    "pair",
    "peers",
    "replicas",
    "test_node_disconnect_mid_job_fails_over",
    "test_session_and_node_on_different_replicas",
]

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
