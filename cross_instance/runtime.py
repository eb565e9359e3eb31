"""The cross-instance runtime of one replica: presence, fenced ownership, routed sends, the inbox.

This module wires the runtime's parts and owns the lifecycle and the drain order; each part is
a module of its own concept:

* :mod:`~cross_instance.presence`: the presence record, refreshed on its own connection every
  ``presence_refresh_ms``; notices remote drain requests and fencing;
* :mod:`~cross_instance.ownership`: which replica owns a node or a session (claim, release);
* :mod:`~cross_instance.routing` and :mod:`~cross_instance.holds`: where a send goes; messages
  whose target has no live owner wait up to ``route_grace_ms``;
* :mod:`~cross_instance.consumer`: the reader of our inbox and the reclaim of stuck entries;
* :mod:`~cross_instance.takeover`: inboxes of dead replicas are taken over, under a lease;
* :mod:`~cross_instance.claims`: a message id is handled at most once within ``dedup_ttl_ms``;
* :mod:`~cross_instance.inbox`, :mod:`~cross_instance.dead_letters`: the streams themselves.

Lifecycle (``async with runtime``): the inbox stream and its consumer group are created, then the
presence record is written (so nothing sent to us is missed); the presence, reader, reclaim,
takeover and hold re-check tasks run until leaving. Leaving drains (:meth:`Runtime.drain`).
Fencing is an event (:meth:`Lifecycle.fence`): the reaction (tell the owners of what we lost,
drain) is here, in :meth:`Runtime._react_to_fence`. Delivery is at least once; handlers see a
message id at most once within ``dedup_ttl_ms`` (see :mod:`~cross_instance.claims`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
from anyio.abc import TaskGroup
from prometheus_client import CollectorRegistry
from redis.asyncio import RedisCluster

from cross_instance.claims import DeliveryClaims, Handler
from cross_instance.config import RedisConfig, RuntimeConfig, validate_runtime
from cross_instance.consumer import Consumer
from cross_instance.dead_letters import DeadLetters
from cross_instance.envelope import Envelope, SendResult
from cross_instance.errors import RuntimeDraining, RuntimeFenced
from cross_instance.holds import Holds
from cross_instance.ids import Identity
from cross_instance.inbox import InboxStream, append_entry
from cross_instance.keys import RuntimeKeys
from cross_instance.lifecycle import Lifecycle
from cross_instance.metrics import RuntimeMetrics
from cross_instance.ownership import KINDS, OnLost, Ownership
from cross_instance.presence import Presence
from cross_instance.redis_client import AnyRedis, connect, connect_blocking
from cross_instance.routing import Obsolete, Router
from cross_instance.scripts import Scripts, call_script, library
from cross_instance.takeover import OnReleased, Takeover

__all__ = [
    "Envelope",
    "Handler",
    "Runtime",
    "RuntimeDraining",
    "RuntimeFenced",
    "SendResult",
    "append_entry",
    "call_script",
]

log = logging.getLogger("lingua.runtime")


class Runtime:
    """One replica's view of the cluster; see the module docstring for what runs."""

    def __init__(
        self,
        redis_config: RedisConfig,
        runtime_config: RuntimeConfig,
        handler: Handler,
        *,
        on_ownership_lost: OnLost | None = None,
        on_drain_requested: Callable[[], Awaitable[None]] | None = None,
        on_released: OnReleased | None = None,
        obsolete: Obsolete | None = None,
        registry: CollectorRegistry | None = None,
        address: str = "",
        version: str = "",
    ) -> None:
        validate_runtime(runtime_config)
        self.redis_config = redis_config
        self.config = runtime_config
        self.handler = handler
        self.on_ownership_lost = on_ownership_lost
        self.on_drain_requested = on_drain_requested
        self.address = runtime_config.advertise_address or address
        self.version = version
        self.identity = Identity.new(runtime_config.instance_id)
        self.instance_id = self.identity.instance_id
        self.epoch = self.identity.epoch
        self.token = self.identity.token
        self.keys = RuntimeKeys(redis_config.key_prefix)
        self.inbox = self.keys.inbox(self.token)
        self.metrics = RuntimeMetrics(registry)
        self._tg: TaskGroup | None = None

        token, config, metrics = self.token, runtime_config, self.metrics
        self.lifecycle = Lifecycle(token)
        self.scripts = Scripts(self.keys, metrics.time_script)
        self.presence = Presence(
            self.identity, config, redis_config, self.scripts, self.lifecycle, metrics
        )
        self.inbox_stream = InboxStream(
            token, self.keys, config, self.scripts, self.lifecycle, metrics
        )
        self.dead_letters = DeadLetters(token, config, redis_config, self.scripts, metrics)
        self.claims = DeliveryClaims(token, self.keys, config, redis_config, self.scripts, handler)
        self.ownership = Ownership(
            token, config, self.scripts, self.lifecycle, self.inbox_stream, on_ownership_lost
        )
        self.holds = Holds(config, redis_config, metrics)
        self.router = Router(
            token,
            config,
            self.lifecycle,
            self.ownership,
            self.claims,
            self.inbox_stream,
            self.dead_letters,
            self.holds,
            metrics,
            obsolete,
        )
        self.consumer = Consumer(
            token,
            config,
            redis_config,
            self.lifecycle,
            self.scripts,
            self.inbox_stream,
            self.claims,
            self.ownership,
            self.router,
            self.dead_letters,
            metrics,
        )
        self.takeover = Takeover(
            token,
            config,
            self.lifecycle,
            self.scripts,
            self.inbox_stream,
            self.claims,
            self.ownership,
            self.router,
            self.consumer,
            self.dead_letters,
            metrics,
            on_released,
        )

    def __repr__(self) -> str:
        state = "fenced" if self.fenced else "draining" if self.draining else "running"
        return (
            f"<Runtime {self.token} {state} owned={len(self.ownership.owned)} "
            f"held={len(self.holds)} inflight={len(self.consumer.inflight)}>"
        )

    @property
    def draining(self) -> bool:
        return self.lifecycle.draining

    @property
    def fenced(self) -> bool:
        return self.lifecycle.fenced

    @property
    def redis(self) -> AnyRedis | None:
        """The main connection (None unless running)."""
        return self.scripts.client

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        try:
            await self._start()
        except BaseException:
            await self._close_clients()
            raise
        log.info("runtime started", extra={"instance": self.token})
        return self

    async def _close_clients(self) -> None:
        clients = (self.consumer.client, self.presence.client, self.scripts.client)
        for client in clients:
            if client is not None:
                await client.aclose()

    async def _start(self) -> None:
        redis = self.scripts.client = connect(self.redis_config)
        self.presence.client = connect(self.redis_config)
        self.consumer.client = connect_blocking(self.redis_config, self.config.inbox_block_ms)
        for client in (redis, self.presence.client, self.consumer.client):
            if isinstance(client, RedisCluster):
                await client.initialize()
        await library().load(redis)
        await self.inbox_stream.create()
        await self.presence.register(self.address, self.version)
        self._tg = tg = anyio.create_task_group()
        await tg.__aenter__()
        tg.start_soon(self.presence.run)
        tg.start_soon(self.consumer.read)
        tg.start_soon(self.consumer.reclaim)
        tg.start_soon(self.takeover.run)
        tg.start_soon(self.router.recheck_held, tg)
        tg.start_soon(self._react_to_fence)
        tg.start_soon(self._serve_drain_request)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.config.drain_grace_ms / 1000):
                try:
                    await self.drain()
                except Exception:
                    log.exception("drain failed", extra={"instance": self.token})
        # Not cut by a deadline from here: a cut would drop held sends nobody then knows of.
        # Each DLQ write is bounded (abandon_held), and what the DLQ does not take is counted.
        with anyio.CancelScope(shield=True):
            await self.router.abandon_held()
        # The task group's scope must be the innermost one when it exits: no scope around it.
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None
        with anyio.CancelScope(shield=True):
            await self._close_clients()
        self.scripts.client = None

    async def _react_to_fence(self) -> None:
        """The one reaction to being fenced: what we owned is lost (its owners are told), and
        we drain."""
        await self.lifecycle.fenced_event.wait()
        lost = self.ownership.drop_all()
        self.lifecycle.ask_drain()
        for kind, ident in lost:
            await self.ownership.tell_lost(kind, ident)

    async def _serve_drain_request(self) -> None:
        """A drain was asked for (remotely, or by a fence): the user's hook drains, or we do."""
        await self.lifecycle.drain_asked.wait()
        try:
            if self.on_drain_requested is not None:
                await self.on_drain_requested()
            else:
                await self.drain()
        except Exception:
            log.exception("drain request failed", extra={"instance": self.token})

    # -- ownership -------------------------------------------------------------------------

    async def claim_node(self, node_id: str) -> str | None:
        """Own ``node_id`` from now on; returns the previous owner token (None when none)."""
        return await self.ownership.claim("node", node_id)

    async def claim_session(self, session_id: str) -> str | None:
        return await self.ownership.claim("session", session_id)

    async def release_node(self, node_id: str) -> bool:
        """Give ``node_id`` up if we still own it (compare-and-set on our token)."""
        return await self.ownership.release("node", [node_id]) == 1

    async def release_session(self, session_id: str) -> bool:
        return await self.ownership.release("session", [session_id]) == 1

    # -- sending ---------------------------------------------------------------------------

    async def send_to_node(
        self,
        node_id: str,
        kind: str,
        payload: str,
        trace_id: str = "",
        *,
        resumable: bool = True,
        began_ms: int = 0,
        tc: str = "",
    ) -> SendResult:
        """``began_ms``: when the work this message serves began (the handler measures from it;
        see :attr:`Envelope.began_ms`). ``tc``: the sender's trace context, carried opaquely."""
        return await self.router.send(
            "node", node_id, kind, payload, trace_id, resumable, began_ms, tc
        )

    async def send_to_session(
        self,
        session_id: str,
        kind: str,
        payload: str,
        trace_id: str = "",
        *,
        resumable: bool = True,
        began_ms: int = 0,
        tc: str = "",
    ) -> SendResult:
        """``resumable=False``: the session cannot come back under this id; once its owner has
        released it the message is dropped (``route="dropped"``, counted) instead of held and
        dead-lettered. An owner that merely looks not live is still waited for."""
        return await self.router.send(
            "session", session_id, kind, payload, trace_id, resumable, began_ms, tc
        )

    # -- inbox and takeover ----------------------------------------------------------------

    async def reclaim_once(self) -> int:
        """One pass over our stuck entries; returns how many were retried or dead-lettered."""
        return await self.consumer.reclaim_once()

    async def take_over(self, dead: str) -> bool:
        """Re-route every entry of ``dead``'s inbox, then retire it (see :mod:`takeover`)."""
        return await self.takeover.take_over(dead)

    # -- drain -------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Hand everything over and leave: draining flag in presence, release what we own,
        stop reading, re-route what is left in our inbox (pending or unread) to the targets'
        current owners (or the DLQ after the grace), wait for held sends, delete presence.
        Idempotent; a second caller waits for the first."""
        life = self.lifecycle
        if life.drain_started:
            await life.drain_done.wait()
            return
        life.drain_started = True
        life.draining = True
        # Every message held from here on is dead-lettered by then: a long inbox of ownerless
        # entries cannot hold the drain past its grace.
        self.holds.cut_at(time.monotonic() + self.config.route_grace_ms / 1000)
        try:
            if self._tg is None:
                return
            if not life.fenced:
                with _logged("draining presence flag"):
                    await self.presence.refresh()
            for kind in KINDS:
                idents = self.ownership.owned_of(kind)
                with _logged("releasing ownership"):
                    await self.ownership.release(kind, idents)
            self.ownership.owned.clear()
            life.stopping = True
            await self.consumer.reader_done.wait()
            async with self.consumer.reclaim_lock:
                pass  # a reclaim pass in progress has finished
            handed_over = False
            if not life.fenced:
                with _logged("handing over the inbox"):
                    handed_over = await self.takeover.take_over(self.token)
            while self.holds.held:  # including holds that began during the hand-over
                with anyio.move_on_after(self.config.route_recheck_ms / 1000):
                    await self.holds.held[0].done.wait()
            if handed_over:
                with _logged("leaving presence"):
                    await self.presence.leave()
                log.info("drained", extra={"instance": self.token})
            elif not life.fenced:  # a fenced replica's record is cleaned up by its taker
                # Leaving now would orphan what is left in the inbox: let presence expire
                # instead, and a live replica takes the inbox over.
                log.warning(
                    "drain: inbox not handed over; a peer takes it over when presence expires",
                    extra={"instance": self.token},
                )
        finally:
            life.drain_done.set()


class _logged:
    """Log and swallow a failed drain step: the next steps still run."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None and isinstance(exc, Exception):
            log.warning("drain: %s failed: %r", self.what, exc)
            return True
        return False
