"""A real ``serve`` replica audits on its own every ``audit.interval_ms`` and exports what it
finds on /metrics; the violation goes back to 0 once it is repaired."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest
from redis import Redis as SyncRedis

from cross_instance.keys import RuntimeKeys
from tests.e2e.daemons import Replica
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def replica(redis_url: str) -> Iterator[Replica]:
    prefix = f"audit{secrets.token_hex(4)}"
    started = Replica(redis_url, "r-audit", prefix, {"LINGUA_AUDIT__INTERVAL_MS": "200"}).start()
    try:
        yield started
    finally:
        started.stop()
        with SyncRedis.from_url(redis_url) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)


def _gauge(replica: Replica, check: str) -> float | None:
    body = replica.get("/metrics")[1].decode()
    found = re.search(rf'^lingua_audit_violations\{{check="{check}"\}} (\S+)$', body, re.M)
    return None if found is None else float(found[1])


def _runs(replica: Replica, outcome: str) -> float:
    body = replica.get("/metrics")[1].decode()
    found = re.search(rf'^lingua_audit_runs_total\{{outcome="{outcome}"\}} (\S+)$', body, re.M)
    return 0.0 if found is None else float(found[1])


async def test_the_replica_exports_a_violation_and_its_repair(
    replica: Replica, redis_url: str
) -> None:
    assert _gauge(replica, "dead_owners") == 0.0  # present before any run
    await until(lambda: _runs(replica, "clean") >= 1)
    owners = RuntimeKeys(replica.key_prefix).owners("node")
    with SyncRedis.from_url(redis_url) as client:
        client.hset(owners, "n-orphan", "gone-replica@1")
        await until(lambda: _gauge(replica, "dead_owners") == 1.0)
        assert _runs(replica, "violations") >= 1
        client.hdel(owners, "n-orphan")
    await until(lambda: _gauge(replica, "dead_owners") == 0.0)
    assert _runs(replica, "failed") == 0.0
