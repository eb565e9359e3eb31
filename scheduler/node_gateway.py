"""``/ws/node``: compute nodes register, heartbeat, and return results (docs/protocol.md; the original's §4).

Identity is bound to the socket: every message after ``node_register`` must name the socket's own
``node_id`` (the original trusted whatever id a frame carried, §7.13). Unparseable frames get no
reply, as the real node expects none (docs/protocol.md); they are logged and counted.

A node's connection generation comes from ``register_node``: the clean-up of an old socket passes
its own generation, so it can never take a newer registration of the same id offline (§7 B13).

A node that registers again with its id (the real node reconnects ~5 s after a drop, possibly to
another replica) may still be working on a job of its old connection, and sends that result on
the new one; the core accepts it. A heartbeat that reports fewer ``running_jobs`` than it had
jobs of its old connection says some were lost (a result ready while its socket was down is
discarded): they all move then (:meth:`SchedulingCore.move_lost_jobs`), not at their deadline;
one it still finishes wins if its result comes first.

A draining replica takes its nodes out of the pools first (:meth:`NodeGateway.drain`), so no
job is sent to a node it is about to close, and closes each once it runs no job.

The decisions without I/O live in :mod:`scheduler.node_rules`; what a node says about a job
(ack, start, partial, result) goes to :class:`scheduler.jobs.JobLifecycle`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import msgspec
from websockets.exceptions import ConnectionClosed

from cross_instance.clock import now_ms
from cross_instance.envelope import Envelope, RuntimeDraining, RuntimeFenced
from scheduler import auth as auth_
from scheduler import node_rules
from scheduler import protocol as wire
from scheduler.jobs import JobLifecycle
from scheduler.links import CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER, GatewaySettings, Link
from scheduler.metrics import ReplicaMetrics
from scheduler.redis_wait import REDIS_AWAY
from scheduler.scheduling.codes import (
    InvalidInput,
    NodeNotRegistered,
    SchedulingError,
    StaleGeneration,
)
from scheduler.scheduling.core import SchedulingCore
from scheduler.scheduling.types import Moves, NodeCapabilities
from scheduler.tracing import NO_TRACING, Tracing

__all__ = ["NodeClaims", "NodeGateway"]

log = logging.getLogger("lingua.node")


class NodeClaims(Protocol):
    """Ownership of node ids across replicas (:class:`cross_instance.runtime.Runtime`)."""

    async def claim_node(self, node_id: str) -> str | None: ...

    async def release_node(self, node_id: str) -> bool: ...


@dataclass
class NodeConnection:
    link: Link
    node_id: str
    generation: int
    caps: NodeCapabilities
    grant: auth_.NodeGrant  # what the node's credential allows (its languages)
    # registered with an id it had before: jobs of an earlier connection may still be its own
    # until a heartbeat reports it runs none
    may_hold_old_jobs: bool = False
    # its replica is draining: out of the pools, closed once it runs no job (NodeGateway.drain)
    draining: bool = False


class NodeGateway:
    def __init__(
        self,
        *,
        core: SchedulingCore,
        claims: NodeClaims,
        jobs: JobLifecycle,
        settings: GatewaySettings,
        metrics: ReplicaMetrics,
        draining: Callable[[], bool],
        auth: auth_.Authenticator,
        tracing: Tracing = NO_TRACING,
        fenced: Callable[[], bool] = lambda: False,
    ) -> None:
        """``fenced``: this replica was fenced (another took its ids over): a node it closes
        has its jobs moved at once, as on any disconnect, not kept as on a drain."""
        self.core = core
        self.claims = claims
        self.jobs = jobs
        self.settings = settings
        self.metrics = metrics
        self.draining = draining
        self.auth = auth
        self.fenced = fenced
        self.tracing = tracing
        self.local: dict[str, NodeConnection] = {}
        self._drain_code = settings.shutdown_close_code
        self._left = anyio.Event()  # set whenever a connection leaves self.local

    def count(self) -> int:
        return len(self.local)

    async def serve(self, link: Link, grant: auth_.NodeGrant = auth_.OPEN_NODE) -> None:
        """``grant``: what the node's credential allows (the replica admitted the socket)."""
        conn: NodeConnection | None = None
        try:
            async for frame in link.ws:
                self.metrics.frames_in.labels("node").inc()
                if not link.within_rate():
                    # Nodes get no error frames: the node reconnects, its jobs fail over.
                    self.metrics.limit_breaches.labels("node_message_rate").inc()
                    log.warning("message rate limit: closing", extra={"node_id": link.ident})
                    link.close(CLOSE_POLICY, "message rate limit")
                    break
                try:
                    message = wire.decode_node_message(frame)
                except wire.ProtocolError as exc:
                    log.warning(
                        "unparseable node frame: %s",
                        exc,
                        extra={"node_id": conn.node_id if conn else None},
                    )
                    continue
                route = node_rules.route(message, conn.node_id if conn else None)
                if route == "register":
                    assert isinstance(message, wire.NodeRegister)
                    conn = await self._register(link, message, conn, grant)
                elif route == "foreign":
                    assert conn is not None
                    log.warning(
                        "frame names another node: refused", extra={"node_id": conn.node_id}
                    )
                elif route == "handle":
                    assert conn is not None
                    try:
                        await self._handle(conn, message)
                    except REDIS_AWAY as exc:
                        # Redis is away (a result waited for it already, see on_result): a
                        # heartbeat or progress frame is skipped, the socket stays open.
                        self.metrics.jobs.labels("node_frame_unsaved").inc()
                        log.warning(
                            "node frame not handled, redis unavailable: %r",
                            exc,
                            extra={"node_id": conn.node_id},
                        )
        except ConnectionClosed:
            pass
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    keep_jobs = self.draining() and not self.fenced()
                    await self._disconnect(conn, draining=keep_jobs)

    def _refuse(self, link: Link, node_id: str, why: ValueError) -> None:
        """A registration that cannot be accepted: an ``error`` frame saying why in a sentence
        (e.g. which limit; the real node logs what it does not expect), then 1008."""
        log.warning("registration refused: %s", why, extra={"node_id": node_id})
        self.metrics.errors_sent.labels("INVALID_MESSAGE").inc()
        message = f"Registration refused: {why}"
        link.send(wire.encode(wire.ErrorMessage(code="INVALID_MESSAGE", message=message)))
        link.close(CLOSE_POLICY, "invalid registration")

    async def _register(
        self,
        link: Link,
        message: wire.NodeRegister,
        previous: NodeConnection | None,
        grant: auth_.NodeGrant,
    ) -> NodeConnection | None:
        decision = node_rules.registration(message, previous.node_id if previous else None)
        node_id = decision.node_id
        if isinstance(decision, node_rules.Refuse):
            if decision.why == "another_node":
                link.close(CLOSE_POLICY, "one node per connection")
            else:
                log.warning(
                    "registration without language capabilities: refused",
                    extra={"node_id": node_id},
                )
                link.close(CLOSE_POLICY, "invalid registration")
            return previous
        try:
            # The credential's node id and languages, before anything is claimed.
            node_id, caps = auth_.node_registration(grant, message.node_id, node_id, decision.caps)
        except auth_.Refusal as refusal:
            self.auth.refuse(link, "node", refusal, {"node_id": node_id})
            return previous
        try:
            # Refused before claiming: an invalid registration must not take the id over from
            # the node's valid connection on another replica.
            self.core.check_registration(node_id, caps)
            await self.claims.claim_node(node_id)
        except (RuntimeDraining, RuntimeFenced):
            # This replica is leaving: the node reconnects through the load balancer.
            link.close(self.settings.shutdown_close_code, "draining")
            return previous
        except REDIS_AWAY:
            # Readiness is false meanwhile: the node reconnects (1013 "try again later").
            self.metrics.jobs.labels("node_register_unsaved").inc()
            log.warning("registration deferred: redis unavailable", extra={"node_id": node_id})
            link.close(CLOSE_TRY_AGAIN_LATER, "redis unavailable")
            return previous
        except ValueError as exc:  # InvalidInput, or an id the runtime cannot route
            self._refuse(link, node_id, exc)
            return previous
        try:
            registered = await self.core.register_node(node_id, caps)
        except REDIS_AWAY:
            # The same, after the claim: it stays ours until the node reconnects or its TTL.
            self.metrics.jobs.labels("node_register_unsaved").inc()
            log.warning("registration deferred: redis unavailable", extra={"node_id": node_id})
            link.close(CLOSE_TRY_AGAIN_LATER, "redis unavailable")
            return previous
        except InvalidInput as exc:
            if node_id not in self.local:
                # Claimed for nothing: give it back (a live connection here keeps its claim).
                await self.claims.release_node(node_id)
            self._refuse(link, node_id, exc)
            return previous
        old = self.local.get(node_id)
        conn = NodeConnection(
            link=link,
            node_id=node_id,
            generation=registered.generation,
            caps=caps,
            grant=grant,
            may_hold_old_jobs=message.node_id is not None,
        )
        self.local[node_id] = conn
        link.ident = node_id
        if old is not None and old.link is not link:
            old.link.close(CLOSE_POLICY, "replaced by a newer connection")
        link.send(
            wire.encode(
                wire.NodeRegisterAck(
                    node_id=node_id, message="Node registered successfully", status="registering"
                )
            )
        )
        log.info(
            "node registered",
            extra={"node_id": node_id, "reason": f"generation {registered.generation}"},
        )
        return conn

    async def _handle(
        self, conn: NodeConnection, message: wire.NodeMessage | wire.NodeCommand
    ) -> None:
        if isinstance(message, wire.NodeHeartbeat):
            await self._heartbeat(conn, message)
        elif isinstance(message, wire.JobResult):
            with self.tracing.node_result(
                conn.node_id, message.job_id, message.attempt_id, message.success, message.trace_id
            ):
                await self.jobs.on_result(conn.node_id, message)
            if conn.draining:
                await self._drain_one(conn)
        elif isinstance(message, wire.NodeAsrPartial):
            await self.jobs.on_partial(conn.node_id, message)
        elif isinstance(message, (wire.JobAck, wire.JobStarted)):
            await self.jobs.on_progress(conn.node_id, message)
        elif isinstance(message, wire.NodeError):
            log.warning(
                "node error %s: %s", message.code, message.message, extra={"node_id": conn.node_id}
            )

    async def _heartbeat(self, conn: NodeConnection, message: wire.NodeHeartbeat) -> None:
        caps = node_rules.heartbeat_capabilities(message, conn.caps)
        if caps is not None:
            caps = auth_.trim_languages(conn.grant, caps)
            conn.caps = caps
        load = msgspec.to_builtins(message.resource_usage) if message.resource_usage else None
        try:
            await self.core.heartbeat(conn.node_id, conn.generation, caps=caps, reported_load=load)
        except NodeNotRegistered:
            if conn.draining:
                return  # it is leaving: no new registration from this replica
            # Its record expired (silent too long) but the socket lives: register it again.
            registered = await self.core.register_node(conn.node_id, caps or conn.caps)
            conn.generation = registered.generation
            conn.may_hold_old_jobs = True
        except StaleGeneration:
            conn.link.close(CLOSE_POLICY, "replaced by a newer connection")
            return
        except SchedulingError as exc:
            log.warning("heartbeat refused: %s", exc, extra={"node_id": conn.node_id})
            return
        if conn.may_hold_old_jobs:
            await self._move_lost_jobs(conn, message.resource_usage.running_jobs)

    async def _move_lost_jobs(self, conn: NodeConnection, running: int) -> None:
        try:
            moves = await self.core.move_lost_jobs(conn.node_id, conn.generation, running=running)
        except StaleGeneration:
            conn.link.close(CLOSE_POLICY, "replaced by a newer connection")
            return
        except SchedulingError as exc:
            log.warning("lost jobs not moved: %s", exc, extra={"node_id": conn.node_id})
            return
        # Asked again at the next heartbeat while old jobs may all still run on the node.
        conn.may_hold_old_jobs = moves.remaining > 0
        if moves.actions:
            log.info(
                "node reconnected without %d job(s) of its old connection: moved",
                len(moves.actions),
                extra={"node_id": conn.node_id},
            )
        await self.jobs.carry_out_moves(moves)

    async def _disconnect(self, conn: NodeConnection, *, draining: bool) -> None:
        if self.local.get(conn.node_id) is conn:
            del self.local[conn.node_id]
            self._left.set()
        self.tracing.node_gone(conn.node_id, conn.generation)
        try:
            with anyio.fail_after(self.settings.cleanup_timeout_s):
                if draining:
                    # The node reconnects through the load balancer: keep its jobs, let the TTL
                    # decide if it never comes back.
                    await self.claims.release_node(conn.node_id)
                    return
                try:
                    moves = await self.core.node_offline(conn.node_id, conn.generation)
                except StaleGeneration:
                    return  # a newer connection of this node lives (here or elsewhere)
                except NodeNotRegistered:
                    # A sweep took it offline already (liveness lapsed) and moved its jobs then;
                    # the ownership of the id is still ours to give back.
                    moves = Moves([])
                await self.claims.release_node(conn.node_id)
            await self.jobs.carry_out_moves(moves)
        except Exception:
            log.exception("node clean-up failed", extra={"node_id": conn.node_id})

    def deliver(self, envelope: Envelope) -> None:
        """A frame for one of our nodes (only frames are sent to nodes): written as is."""
        conn = self.local.get(envelope.target_id)
        if conn is None or conn.link.closing:
            raise LookupError(f"node {envelope.target_id} is not connected here")
        if not conn.link.send(envelope.payload.encode()):
            raise LookupError(f"node {envelope.target_id} link is closing")
        # A job_assign sent with its utterance's finalize time: the dispatch latency.
        self.metrics.observe_dispatch(envelope.began_ms, now_ms())
        self.tracing.node_sent(conn.node_id, conn.generation, envelope.payload)

    def evict(
        self, node_id: str, code: int = CLOSE_POLICY, reason: str = "connected elsewhere"
    ) -> None:
        conn = self.local.pop(node_id, None)
        if conn is not None:
            conn.link.close(code, reason)

    async def drain(self, wait_s: float, code: int) -> None:
        """This replica is draining: no placement picks our nodes any more (they leave the
        pools in the core); each node closes (``code``) as soon as it runs no job, so the
        results of the jobs it was sent still come on its socket; what runs after ``wait_s``
        is closed anyway (the node reconnects elsewhere; a job it then lost moves at its
        re-registration)."""
        self._drain_code = code
        for conn in list(self.local.values()):
            await self._drain_one(conn)
        with anyio.move_on_after(wait_s):
            while True:
                left = self._left = anyio.Event()
                if not self.local:
                    break
                await left.wait()
        busy = len(self.local)
        if busy:
            self.metrics.drain_unfinished.labels("node").inc(busy)
            log.warning("drain: %d node(s) still running jobs closed", busy)
        self.close_all(code)

    async def _drain_one(self, conn: NodeConnection) -> None:
        """Out of the pools (once); closed when it runs no job any more."""
        conn.draining = True
        try:
            running = await self.core.drain_node(conn.node_id, conn.generation)
        except (NodeNotRegistered, StaleGeneration):
            running = 0  # gone or replaced: nothing of ours runs there
        except Exception:
            log.exception("drain: node not taken out of the pools", extra={"node_id": conn.node_id})
            return  # closed at the end of the drain's wait
        if running == 0:
            conn.link.close(self._drain_code, "service restart")

    def close_all(self, code: int) -> None:
        for conn in list(self.local.values()):
            conn.link.close(code, "service restart")
