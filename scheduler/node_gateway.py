"""``/ws/node``: compute nodes register, heartbeat, and return results (original-protocol.md §4).

Identity is bound to the socket: every message after ``node_register`` must name the socket's own
``node_id`` (the original trusted whatever id a frame carried, §7.13). Unparseable frames get no
reply, as the real node expects none (§6.3 item 1); they are logged and counted.

A node's connection generation comes from ``register_node``: the clean-up of an old socket passes
its own generation, so it can never take a newer registration of the same id offline (§7 B13).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from websockets.exceptions import ConnectionClosed

from cross_instance.envelope import RuntimeDraining, RuntimeFenced
from scheduler import protocol as wire
from scheduler.links import CLOSE_POLICY, Link
from scheduler.scheduling.codes import (
    InvalidInput,
    NodeNotRegistered,
    SchedulingError,
    StaleGeneration,
)
from scheduler.scheduling.core import NodeCapabilities

if TYPE_CHECKING:
    from cross_instance.runtime import Envelope
    from scheduler.replica import Replica

__all__ = ["NodeGateway"]

log = logging.getLogger("lingua.node")


@dataclass
class NodeConnection:
    link: Link
    node_id: str
    generation: int
    caps: NodeCapabilities


class NodeGateway:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.local: dict[str, NodeConnection] = {}

    def count(self) -> int:
        return len(self.local)

    async def serve(self, link: Link) -> None:
        conn: NodeConnection | None = None
        try:
            async for frame in link.ws:
                self.replica.frames_in.labels("node").inc()
                try:
                    message = wire.decode_node_message(frame)
                except wire.ProtocolError as exc:
                    log.warning(
                        "unparseable node frame: %s",
                        exc,
                        extra={"node_id": conn.node_id if conn else None},
                    )
                    continue
                if isinstance(message, wire.NodeRegister):
                    conn = await self._register(link, message, conn)
                elif conn is None:
                    # The agent may heartbeat before its register on reconnect (§4.1): ignore it.
                    continue
                elif getattr(message, "node_id", conn.node_id) != conn.node_id:
                    log.warning(
                        "frame names another node: refused", extra={"node_id": conn.node_id}
                    )
                else:
                    await self._handle(conn, message)
        except ConnectionClosed:
            pass
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    await self._disconnect(conn, draining=self.replica.draining)

    async def _register(
        self, link: Link, message: Any, previous: NodeConnection | None
    ) -> NodeConnection | None:
        from scheduler.replica import new_id

        node_id = message.node_id or new_id("node", 8)
        if previous is not None and previous.node_id != node_id:
            link.close(CLOSE_POLICY, "one node per connection")
            return previous
        caps = wire.node_capabilities(message)
        if caps is None:
            log.warning(
                "registration without language capabilities: refused", extra={"node_id": node_id}
            )
            link.close(CLOSE_POLICY, "invalid registration")
            return previous
        try:
            # Refused before claiming: an invalid registration must not take the id over from
            # the node's valid connection on another replica.
            self.replica.core.check_registration(node_id, caps)
            await self.replica.runtime.claim_node(node_id)
        except (RuntimeDraining, RuntimeFenced):
            # This replica is leaving: the node reconnects through the load balancer.
            link.close(self.replica.config.server.shutdown_close_code, "draining")
            return previous
        except ValueError as exc:  # InvalidInput, or an id the runtime cannot route
            log.warning("registration refused: %s", exc, extra={"node_id": node_id})
            link.close(CLOSE_POLICY, "invalid registration")
            return previous
        try:
            registered = await self.replica.core.register_node(node_id, caps)
        except InvalidInput as exc:
            # No error frame: the real node expects none (§6.3 item 1); it is logged instead.
            log.warning("registration refused: %s", exc, extra={"node_id": node_id})
            if node_id not in self.local:
                # Claimed for nothing: give it back (a live connection here keeps its claim).
                await self.replica.runtime.release_node(node_id)
            link.close(CLOSE_POLICY, "invalid registration")
            return previous
        old = self.local.get(node_id)
        conn = NodeConnection(
            link=link, node_id=node_id, generation=registered.generation, caps=caps
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

    async def _handle(self, conn: NodeConnection, message: Any) -> None:
        core = self.replica.core
        if isinstance(message, wire.NodeHeartbeat):
            caps = wire.node_capabilities(message)
            if caps is not None and not caps.hardware:
                # Heartbeats carry no hardware summary: keep the one registered.
                caps = msgspec.structs.replace(caps, hardware=conn.caps.hardware)
                conn.caps = caps
            load = msgspec.to_builtins(message.resource_usage) if message.resource_usage else None
            try:
                await core.heartbeat(conn.node_id, conn.generation, caps=caps, reported_load=load)
            except NodeNotRegistered:
                # Its record expired (silent too long) but the socket lives: register it again.
                registered = await core.register_node(conn.node_id, caps or conn.caps)
                conn.generation = registered.generation
            except StaleGeneration:
                conn.link.close(CLOSE_POLICY, "replaced by a newer connection")
            except SchedulingError as exc:
                log.warning("heartbeat refused: %s", exc, extra={"node_id": conn.node_id})
        elif isinstance(message, wire.JobResult):
            await self._result(conn, message)
        elif isinstance(message, wire.NodeAsrPartial):
            holder = await core.job_holder(message.job_id)
            # Only the job's current node, only into the job's own session (§7.13).
            if (
                holder is not None
                and holder.node_id == conn.node_id
                and holder.session_id == message.session_id
            ):
                await self.replica.send_to_session(
                    holder.session_id,
                    "asr_partial",
                    wire.encode(message).decode(),
                    message.trace_id,
                )
        elif isinstance(message, (wire.JobAck, wire.JobStarted)):
            try:
                if isinstance(message, wire.JobAck):
                    await core.ack(message.job_id, conn.node_id, message.attempt_id)
                else:
                    await core.start(message.job_id, conn.node_id, message.attempt_id)
            except SchedulingError as exc:
                log.info(
                    "progress refused: %s",
                    exc,
                    extra={"node_id": conn.node_id, "job_id": message.job_id},
                )
                return
            if isinstance(message, wire.JobAck):
                event = wire.ui_event(
                    message.session_id, message.job_id, None, "NODE_ACCEPTED", message.trace_id
                )
                await self.replica.send_frame_to_session(
                    message.session_id, event, message.trace_id
                )
        elif isinstance(message, wire.NodeError):
            log.warning(
                "node error %s: %s", message.code, message.message, extra={"node_id": conn.node_id}
            )

    async def _result(self, conn: NodeConnection, message: Any) -> None:
        try:
            completion = await self.replica.core.complete(
                message.job_id, conn.node_id, message.attempt_id, ok=message.success
            )
        except SchedulingError as exc:
            # Stale attempt, foreign node or unknown job: refused, nothing reaches the client.
            log.info(
                "result refused: %s",
                exc,
                extra={
                    "node_id": conn.node_id,
                    "job_id": message.job_id,
                    "attempt": message.attempt_id,
                },
            )
            self.replica.jobs.labels("result_refused").inc()
            return
        if completion.replayed:
            # Already completed by an earlier copy of this result: it reached the session then.
            return
        self.replica.jobs.labels("completed").inc()
        # The job record says whose result it is; the node's claim does not (§7.13).
        result = msgspec.structs.replace(
            message,
            session_id=completion.session_id,
            utterance_index=completion.utterance_index,
        )
        await self.replica.send_to_session(
            completion.session_id, "job_result", wire.encode(result).decode(), message.trace_id
        )

    async def _disconnect(self, conn: NodeConnection, *, draining: bool) -> None:
        if self.local.get(conn.node_id) is conn:
            del self.local[conn.node_id]
        try:
            with anyio.fail_after(self.replica.config.redis.command_timeout_ms / 1000):
                if draining:
                    # The node reconnects through the load balancer: keep its jobs, let the TTL
                    # decide if it never comes back.
                    await self.replica.runtime.release_node(conn.node_id)
                    return
                try:
                    moves = await self.replica.core.node_offline(conn.node_id, conn.generation)
                except StaleGeneration:
                    return  # a newer connection of this node lives (here or elsewhere)
                await self.replica.runtime.release_node(conn.node_id)
            await self.replica.carry_out_moves(moves)
        except Exception:
            log.exception("node clean-up failed", extra={"node_id": conn.node_id})

    def deliver(self, envelope: Envelope) -> None:
        conn = self.local.get(envelope.target_id)
        if conn is None or conn.link.closing:
            raise LookupError(f"node {envelope.target_id} is not connected here")
        if not conn.link.send(envelope.payload.encode()):
            raise LookupError(f"node {envelope.target_id} link is closing")

    def evict(self, node_id: str) -> None:
        conn = self.local.pop(node_id, None)
        if conn is not None:
            conn.link.close(CLOSE_POLICY, "connected elsewhere")

    async def close_all(self, code: int, *, draining: bool) -> None:
        for conn in list(self.local.values()):
            conn.link.close(code, "service restart")
