"""Build redis-py asyncio clients from :class:`RedisConfig`: standalone, Cluster or Sentinel.

Every client reconnects with capped exponential backoff on connection errors, so a Redis restart
or failover is survived without our code catching anything. Blocking reads (XREADGROUP BLOCK) get
a client of their own (:func:`connect_blocking`) so they never hold up other commands.

TLS and ACL credentials come from ``redis.tls*`` and ``redis.username``/``redis.password`` (or the
URL): a Cluster client passes the same TLS settings to every node it discovers, a Sentinel client to
the Sentinels and to the master they name (docs/security.md).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from cross_instance.config import RedisConfig

__all__ = ["AnyRedis", "connect", "connect_blocking"]

AnyRedis: TypeAlias = "Redis | RedisCluster"


def _common(config: RedisConfig, socket_timeout_ms: int | None) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_connect_timeout": config.connect_timeout_ms / 1000,
        "socket_timeout": None if socket_timeout_ms is None else socket_timeout_ms / 1000,
        "retry": Retry(
            ExponentialBackoff(
                cap=config.retry_backoff_cap_ms / 1000, base=config.retry_backoff_base_ms / 1000
            ),
            config.retry_attempts,
        ),
        "retry_on_error": [ConnectionError, TimeoutError, BusyLoadingError, ConnectionResetError],
    }


def _tls(config: RedisConfig) -> dict[str, Any]:
    """redis-py's TLS arguments; the certificate chain is always verified."""
    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": config.tls_ca_file or None,
        "ssl_certfile": config.tls_cert_file or None,
        "ssl_keyfile": config.tls_key_file or None,
        "ssl_check_hostname": config.tls_check_hostname,
    }


def _credentials(config: RedisConfig) -> dict[str, Any]:
    # Only when set: credentials in the URL then apply (check_redis refuses both at once).
    out: dict[str, Any] = {}
    if config.username:
        out["username"] = config.username
    if config.password:
        out["password"] = config.password
    return out


def _with_tls_scheme(url: str) -> str:
    return "rediss://" + url.removeprefix("redis://") if url.startswith("redis://") else url


def _build(
    config: RedisConfig, url: str, socket_timeout_ms: int | None, max_connections: int
) -> AnyRedis:
    kwargs = _common(config, socket_timeout_ms) | _credentials(config)
    tls = _tls(config) if config.tls_enabled else {}
    if tls:
        url = _with_tls_scheme(url)
    if config.mode == "cluster":
        kwargs.pop("retry_on_error")
        return RedisCluster.from_url(url, max_connections=max_connections, **kwargs, **tls)
    if config.mode == "sentinel":
        hosts = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in config.sentinels)]
        # The Sentinels get the socket settings and the same TLS; the credentials are the
        # data nodes' (a Sentinel with its own ACL is not supported).
        reach_sentinels = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
        if tls:
            reach_sentinels |= {"ssl": True, **tls}
            kwargs |= {"ssl": True, **tls}
        sentinel = Sentinel(hosts, sentinel_kwargs=reach_sentinels, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        master: Redis = sentinel.master_for(
            config.sentinel_master, max_connections=max_connections, **kwargs
        )
        return master
    return Redis.from_url(url, max_connections=max_connections, **kwargs, **tls)


def connect(config: RedisConfig, url: str | None = None) -> AnyRedis:
    """The shared client for ordinary commands (a pool of ``redis.max_connections``)."""
    return _build(config, url or config.url, config.command_timeout_ms, config.max_connections)


def connect_blocking(config: RedisConfig, block_ms: int, url: str | None = None) -> AnyRedis:
    """A client for one blocking reader: its socket timeout outlasts the BLOCK time."""
    return _build(config, url or config.url, block_ms + config.command_timeout_ms, 2)
