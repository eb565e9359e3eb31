"""Every operator read (each CLI command, the cluster API, the dashboard, /metrics, the periodic
audit) as the daemon's ACL user on the TLS-only Redis: none may need a command the minimum ACL
(``DAEMON_ACL``, docs/security.md) leaves out (the ACL LOG is emptied before and read after each
test here: tests/security/conftest.py).

The operator API's pool counts once used HVALS and SCARD, which the ACL lacked: /api/v1/cluster
answered 503 on a Redis set up as documented while every script kept working.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import anyio
import orjson
import pytest

from tests.cli.conftest import clean_env, run_cli
from tests.e2e.clients import SimBrowser, SimNode, is_job
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica
from tests.security.tls_redis import TlsAclRedis

pytestmark = pytest.mark.anyio

# One read per command and route; `drain` and the DLQ writes have tests of their own
# (test_dlq_on_tls_acl.py; drain is a write every e2e drain test makes).
CLI_READS = (
    ("nodes",),
    ("nodes", "--json"),
    ("pools",),
    ("jobs",),
    ("jobs", "--json"),
    ("ownership",),
    ("inbox",),
    ("dlq", "list"),
    ("ops-log",),
    ("audit", "--json"),
)


@pytest.fixture
def replica(tls_acl_redis: TlsAclRedis) -> Iterator[Replica]:
    prefix = f"tops{secrets.token_hex(4)}"  # under the test ACL's ~t* (TEST_KEY_PATTERNS)
    settings = {**FAST_SETTINGS, "LINGUA_AUDIT__INTERVAL_MS": "200"}
    started = Replica(tls_acl_redis.url, "r-ops", prefix, settings).start()
    try:
        yield started
    finally:
        started.stop()
        tls_acl_redis.delete_prefix(prefix)


async def test_every_operator_read_works_as_the_daemon_user(
    tls_acl_redis: TlsAclRedis, replica: Replica, peers
) -> None:  # type: ignore[no-untyped-def]
    # something to read: a node running a job of a live session
    node = await peers(SimNode(replica.ws + "/ws/node", (["en"], ["de"])))
    await node.register()
    browser = await peers(SimBrowser(replica.ws + "/ws/session", "en", "de"))
    await browser.init()
    await browser.speak(10)
    await node.wait_for(is_job)

    env = clean_env(LINGUA_REDIS_URL=tls_acl_redis.url, LINGUA_REDIS__KEY_PREFIX=replica.key_prefix)
    for argv in CLI_READS:
        done = await anyio.to_thread.run_sync(lambda argv=argv: run_cli(*argv, env=env))
        assert done.returncode == 0, (argv, done.stderr)
        assert "Traceback" not in done.stderr, (argv, done.stderr)
    for path in ("/api/v1/cluster", "/dashboard", "/metrics", "/readyz"):
        status, _ = replica.get(path)
        assert status == 200, path
    cluster = orjson.loads(replica.get("/api/v1/cluster")[1])
    assert [n["node_id"] for n in cluster["nodes"]] == [node.node_id]
    assert tls_acl_redis.acl_denials() == []
