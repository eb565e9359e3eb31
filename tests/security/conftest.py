"""The security tests run against the TLS-only, ACL-only Redis of ``tls_acl_redis``.

``redis_url`` is that server's daemon-user URL here (replicas get its TLS files and credentials as
``redis.*`` keys); after each test Redis's ACL LOG must be empty: nothing the daemon sent was
refused. Tests that fail logins on purpose use a server of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis, connect
from tests.security.tls_redis import TlsAclRedis


@pytest.fixture(scope="module")
def redis_url(tls_acl_redis: TlsAclRedis) -> str:
    return tls_acl_redis.url


@pytest.fixture
async def redis(redis_config: RedisConfig, tls_acl_redis: TlsAclRedis) -> AsyncIterator[AnyRedis]:
    """As tests/conftest.py's, but cleaned up as the admin: the daemon's user may not SCAN."""
    client = connect(redis_config)
    try:
        yield client
    finally:
        await client.aclose()
        tls_acl_redis.delete_prefix(redis_config.key_prefix)


@pytest.fixture(autouse=True)
def nothing_refused(tls_acl_redis: TlsAclRedis) -> Iterator[None]:
    tls_acl_redis.reset_acl_log()
    yield
    assert tls_acl_redis.acl_denials() == [], "Redis refused something the daemon sent"
