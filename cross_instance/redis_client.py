"""Build redis-py asyncio clients from :class:`RedisConfig`: standalone, Cluster or Sentinel.

Every client reconnects with capped exponential backoff on connection errors, so a Redis restart
or failover is survived without our code catching anything. Blocking reads (XREADGROUP BLOCK) get
a client of their own (:func:`connect_blocking`) so they never hold up other commands.
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


def _build(
    config: RedisConfig, url: str, socket_timeout_ms: int | None, max_connections: int
) -> AnyRedis:
    kwargs = _common(config, socket_timeout_ms)
    if config.mode == "cluster":
        kwargs.pop("retry_on_error")
        return RedisCluster.from_url(url, max_connections=max_connections, **kwargs)
    if config.mode == "sentinel":
        hosts = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in config.sentinels)]
        sentinel = Sentinel(hosts, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        master: Redis = sentinel.master_for(
            config.sentinel_master, max_connections=max_connections, **kwargs
        )
        return master
    return Redis.from_url(url, max_connections=max_connections, **kwargs)


def connect(config: RedisConfig, url: str | None = None) -> AnyRedis:
    """The shared client for ordinary commands (a pool of ``redis.max_connections``)."""
    return _build(config, url or config.url, config.command_timeout_ms, config.max_connections)


def connect_blocking(config: RedisConfig, block_ms: int, url: str | None = None) -> AnyRedis:
    """A client for one blocking reader: its socket timeout outlasts the BLOCK time."""
    return _build(config, url or config.url, block_ms + config.command_timeout_ms, 2)
