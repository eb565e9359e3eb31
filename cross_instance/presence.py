"""Presence: a replica announces itself, proves it is alive, withdraws; the token-liveness rule.

A token ``instance@epoch`` is live while the presence record of its instance carries that epoch
and the instance's ``alive`` score (presence expiry, Redis server clock, ms) is still ahead: the
Lua scripts apply the same rule (``includes/runtime.lua``: ``is_live``), :func:`live_token` is
its one Python reading (the runtime's claims and the operator views use it).

:class:`Presence` refreshes the record on its own connection every ``presence_refresh_ms`` (a
blocked read or a busy handler can never starve it), notices remote drain requests and fencing.
"""

from __future__ import annotations

import logging

import anyio
import msgspec

from cross_instance.config import RedisConfig, RuntimeConfig
from cross_instance.errors import RuntimeReply
from cross_instance.ids import Identity
from cross_instance.keys import RuntimeKeys, split_token
from cross_instance.lifecycle import Lifecycle
from cross_instance.metrics import RuntimeMetrics
from cross_instance.redis_client import AnyRedis
from cross_instance.scripts import Scripts

__all__ = ["Presence", "live_token", "server_ms", "token_live"]

log = logging.getLogger("lingua.runtime")


async def server_ms(redis: AnyRedis) -> int:
    """The Redis server's clock (ms): presence expiry scores are written by it, not by us."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def live_token(
    redis: AnyRedis, keys: RuntimeKeys, instance: str, now: int | None = None
) -> str | None:
    """The token of ``instance``'s live start, or None when it is not live (at ``now``, by
    default the server's clock read after the record)."""
    raw = await redis.hget(keys.rt("presence"), instance)
    until = await redis.zscore(keys.rt("alive"), instance)
    if now is None:
        now = await server_ms(redis)
    if raw is None or until is None or until <= now:
        return None
    epoch = msgspec.json.decode(raw).get("epoch")
    return f"{instance}@{epoch}" if epoch else None


async def token_live(redis: AnyRedis, keys: RuntimeKeys, token: str) -> bool:
    """Is ``token`` live now (a malformed token is not)?"""
    try:
        instance, _ = split_token(token)
    except ValueError:
        return False
    return await live_token(redis, keys, instance) == token


class Presence:
    """This replica's presence record and its refresh loop."""

    def __init__(
        self,
        identity: Identity,
        config: RuntimeConfig,
        redis_config: RedisConfig,
        scripts: Scripts,
        lifecycle: Lifecycle,
        metrics: RuntimeMetrics,
    ) -> None:
        self.identity = identity
        self.config = config
        self.redis_config = redis_config
        self.scripts = scripts
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.client: AnyRedis | None = None  # its own connection

    async def register(self, address: str, version: str) -> None:
        record = {"address": address, "version": version}
        await self.scripts.run(
            "register_presence",
            [
                self.identity.instance_id,
                self.identity.epoch,
                msgspec.json.encode(record).decode(),
                self.config.presence_ttl_ms,
                "",
            ],
        )

    async def refresh(self) -> bool:
        """Refresh our presence record; True when it was refused (we are fenced)."""
        life = self.lifecycle
        code, data = await self.scripts.run(
            "refresh_presence",
            [
                self.identity.instance_id,
                self.identity.epoch,
                "1" if life.draining else "0",
                self.config.presence_ttl_ms,
                "",
            ],
            client=self.client,
        )
        if code is RuntimeReply.FENCED:
            return not life.drain_done.is_set()  # after our own drain, refused on purpose
        if data.get("drain_requested_ms") and not life.drain_asked.is_set() and not life.draining:
            log.info("drain requested remotely", extra={"instance": self.identity.token})
            life.ask_drain()
        return False

    async def leave(self) -> None:
        await self.scripts.run("leave_presence", [self.identity.instance_id, self.identity.epoch])

    async def run(self) -> None:
        """Refresh until fenced or drained."""
        # A refresh that hangs is cut short so the next one still lands within the TTL (two
        # attempts fit in it: validate() keeps the TTL at least 3 refresh intervals).
        timeout = (
            min(
                self.redis_config.command_timeout_ms,
                (self.config.presence_ttl_ms - 2 * self.config.presence_refresh_ms) / 2,
            )
            / 1000
        )
        life = self.lifecycle
        while not life.fenced and not life.drain_done.is_set():
            await anyio.sleep(self.config.presence_refresh_ms / 1000)
            if life.drain_done.is_set():
                return
            try:
                with anyio.fail_after(timeout):
                    fenced = await self.refresh()
            except Exception as exc:
                self.metrics.presence_refresh_failures.inc()
                log.warning(
                    "presence refresh failed: %r", exc, extra={"instance": self.identity.token}
                )
                continue
            if fenced:
                life.fence("presence refresh refused")
