"""One scheduler replica: composes the gateways, the job lifecycle and the runtime; owns the
start, the sweeper, readiness and the drain.

The replica decides nothing about scheduling: scripts decide (``SchedulingCore``), the job
lifecycle (:mod:`scheduler.jobs`) carries out what they return, the gateways own the sockets.
Messages between replicas travel through the cross-instance runtime (their kinds:
:mod:`scheduler.messages`); when the target is connected here the runtime delivers in process.
"""

from __future__ import annotations

import importlib.metadata
import logging
import signal
import socket
from contextlib import AsyncExitStack
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode

from cross_instance import admin
from cross_instance.clock import now_ms
from cross_instance.envelope import Envelope
from cross_instance.redis_client import AnyRedis
from cross_instance.runtime import Runtime
from scheduler import messages, ops_audit
from scheduler.audit import Auditor, audit_forever
from scheduler.auth import Authenticator, Endpoint, Refusal
from scheduler.cluster_view import (
    ClusterView,
    DlqAction,
    DlqActionName,
    DlqActionResult,
    read_cluster_view,
)
from scheduler.config import Config
from scheduler.http_routes import HttpRoutes, Listener
from scheduler.jobs import JobLifecycle
from scheduler.limits import AddressCounts, client_address, message_bucket
from scheduler.links import CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER, GatewaySettings, Link
from scheduler.metrics import ReplicaMetrics
from scheduler.node_gateway import NodeGateway
from scheduler.ops_audit import OpsRecord
from scheduler.outbox import Outbox
from scheduler.redis_wait import RedisWait
from scheduler.rooms import Rooms
from scheduler.scheduling.core import SchedulingCore
from scheduler.scheduling.types import Moves
from scheduler.session_gateway import SessionGateway
from scheduler.tracing import flushed_at_exit
from scheduler.tracing import start as start_tracing

__all__ = ["Replica"]

log = logging.getLogger("lingua.replica")


class Replica:
    def __init__(
        self, config: Config, redis: AnyRedis, *, span_exporter: object | None = None
    ) -> None:
        """``span_exporter``: with ``tracing.enabled``, an OpenTelemetry ``SpanExporter`` that
        gets each span as it ends instead of the OTLP exporter (tests, embedding)."""
        self.config = config
        self.redis = redis
        self.registry = CollectorRegistry()
        self.core = SchedulingCore(redis, config.scheduling, key_prefix=config.redis.key_prefix)
        self.rooms = Rooms(redis, config.redis.key_prefix, config.session)
        self.runtime = Runtime(
            config.redis,
            config.runtime,
            self.deliver,
            on_ownership_lost=self.ownership_lost,
            on_drain_requested=self.drain_requested,
            on_released=self.released,
            obsolete=self.obsolete,
            registry=self.registry,
            address=_reachable_address(config.server.host, config.server.port),
            version=_version(),
        )
        # One histogram times every script: the runtime's, and the core's, rooms' and audit's.
        self.core.library.timer = self.rooms.scripts.timer = self.runtime.metrics.time_script
        self.starting = True
        self.draining = False
        self.open_sockets = 0
        self.addresses = AddressCounts(config.limits.connections_per_address)
        self._stop = anyio.Event()
        # Redis answered the last sweep (every sweep_interval_ms): readiness without a probe.
        self.redis_ok = False
        self.metrics = ReplicaMetrics(
            self.registry,
            ready=lambda: (
                not self.starting
                and not self.draining
                and self.redis_ok
                and not self.redis_wait.waiting
            ),
            version=_version(),
        )
        self.tracing = start_tracing(
            config.tracing,
            self.runtime.instance_id,
            registry=self.registry,
            exporter=span_exporter,
        )
        self.auth = Authenticator(
            config.auth,
            redis,
            key_prefix=config.redis.key_prefix,
            registry=self.registry,
            errors_sent=self.metrics.errors_sent,
        )
        self.auth.tenants.scripts.timer = self.runtime.metrics.time_script
        outbox = Outbox(self.runtime, self.tracing)
        self.redis_wait = RedisWait(
            config.redis, lambda path, outcome: self.metrics.redis_waits.labels(path, outcome).inc()
        )
        self.jobs = JobLifecycle(
            self.core,
            outbox,
            config.session,
            self.metrics,
            self.rooms,
            self.redis_wait,
            self.tracing,
        )
        self.metrics.redis_waiting.set_function(lambda: float(self.redis_wait.waiting))
        settings = GatewaySettings(
            shutdown_close_code=config.server.shutdown_close_code,
            cleanup_timeout_s=config.redis.command_timeout_ms / 1000,
        )
        self.nodes = NodeGateway(
            core=self.core,
            claims=self.runtime,
            jobs=self.jobs,
            settings=settings,
            metrics=self.metrics,
            draining=lambda: self.draining,
            auth=self.auth,
            tracing=self.tracing,
            fenced=lambda: self.runtime.fenced,
        )
        self.sessions = SessionGateway(
            core=self.core,
            claims=self.runtime,
            jobs=self.jobs,
            rooms=self.rooms,
            outbox=outbox,
            config=config.session,
            settings=settings,
            metrics=self.metrics,
            auth=self.auth,
            limits=config.limits,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self.core.load_scripts()
        await self.rooms.scripts.load(self.redis)
        await self.auth.tenants.scripts.load(self.redis)
        server_cfg = self.config.server
        split = server_cfg.ops_port != 0  # operator routes on a listener of their own

        def routes(listener: Listener) -> HttpRoutes:
            return HttpRoutes(
                readiness=self.readiness,
                metrics=lambda: generate_latest(self.registry),
                cluster=self.cluster_view,
                stats=self.stats_view,
                dlq_action=self.dlq_action,
                admin_token=server_cfg.admin_token,
                read_token=server_cfg.ops_read_token,
                listener=listener,
                refused=lambda reason: self.metrics.ops_refused.labels(reason).inc(),
            )

        async with (
            flushed_at_exit(self.tracing),
            self.runtime,
            anyio.create_task_group() as tg,
            AsyncExitStack() as ops,
        ):
            if split:
                await ops.enter_async_context(
                    serve(self.handle_socket, server_cfg.ops_host, server_cfg.ops_port,
                          process_request=routes("ops").process_request)
                )  # fmt: skip
                log.info("operator routes on %s:%s", server_cfg.ops_host, server_cfg.ops_port)
            async with serve(
                self.handle_socket,
                server_cfg.host,
                server_cfg.port,
                process_request=routes("public" if split else "both").process_request,
                compression="deflate" if server_cfg.compression else None,
                max_size=server_cfg.max_frame_bytes,
                ping_interval=server_cfg.ping_interval_ms / 1000 or None,
                ping_timeout=server_cfg.ping_timeout_ms / 1000,
                close_timeout=server_cfg.close_timeout_ms / 1000,
            ) as server:
                tg.start_soon(self._sweep_forever)
                auditor = Auditor(self.redis, self.config)
                auditor.library.timer = self.runtime.metrics.time_script
                tg.start_soon(
                    audit_forever,
                    auditor,
                    self.metrics.audit,
                    self.config.audit.interval_ms,
                )
                tg.start_soon(self._watch_signals)
                tg.start_soon(self.auth.tenants.renew_forever, self.sessions.tenant_leases)
                self.starting = False
                log.info("replica ready on %s:%s", server_cfg.host, server_cfg.port)
                task_status.started()
                await self._stop.wait()
                await self.drain(server)
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        self._stop.set()

    async def drain_requested(self) -> None:
        """``lingua-scheduler drain <us>`` from anywhere: the same path as SIGTERM (the runtime
        has logged the request)."""
        self.stop()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal %s: draining", signal.Signals(signum).name)
                self.stop()
                return

    async def drain(self, server: Server) -> None:
        """Readiness off; our nodes take no new job and close (1012) once they run none; no new
        sockets; our sessions take no new utterance and close (1012) once each is answered, or
        are told what was not translated when the wait ends; then hand the rest over, leave.

        The waits come before :meth:`Runtime.drain`, which gives every id up at its start: a
        result arriving after that would be dropped as for an ended target."""
        self.draining = True
        server_cfg = self.config.server
        code = server_cfg.shutdown_close_code
        unready_s = server_cfg.drain_unready_ms / 1000
        wait_s = self._drain_wait_ms() / 1000
        with anyio.move_on_after(self.config.runtime.drain_grace_ms / 1000) as scope:
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.nodes.drain, unready_s + wait_s, code)
                    # Readiness is already false: let load balancers notice before refusing.
                    await anyio.sleep(unready_s)
                    server.close(close_connections=False)
                    await self.sessions.drain(wait_s, code)
            except Exception:
                # The hand-over below must still run: close what is left and go on.
                log.exception("drain: waiting for in-flight work failed")
                server.close(close_connections=False)
                self.nodes.close_all(code)
                await self.sessions.close_all(code)
            await self.runtime.drain()
        if scope.cancelled_caught:
            log.warning(
                "drain grace (%s ms) exceeded: exiting anyway", self.config.runtime.drain_grace_ms
            )

    def _drain_wait_ms(self) -> int:
        """``server.drain_results_ms``, within what the grace leaves for the hand-over."""
        rt = self.config.runtime
        wait = self.config.server.drain_results_ms
        if rt.drain_grace_ms > 0:
            left = rt.drain_grace_ms - self.config.server.drain_unready_ms - rt.route_grace_ms
            wait = min(wait, max(0, left))
        return wait

    async def readiness(self) -> tuple[bool, str]:
        if self.starting:
            return False, "starting"
        if self.draining or self.runtime.draining:
            return False, "draining"
        if self.redis_wait.waiting:
            # Results or dispatches are waiting for Redis: no new connections meanwhile.
            return False, "redis unreachable: calls waiting for it"
        try:
            with anyio.fail_after(self.config.redis.command_timeout_ms / 1000):
                await self.redis.ping()
        except Exception as exc:
            self.redis_ok = False
            return False, f"redis unreachable: {type(exc).__name__}"
        self.redis_ok = True
        return True, "ready"

    # -- sockets ---------------------------------------------------------------------------

    async def handle_socket(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request else ""
        if self.draining:
            await ws.close(self.config.server.shutdown_close_code, "draining")
            return
        kind: Endpoint = "node" if path == "/ws/node" else "session"
        if self.open_sockets >= self.config.server.max_connections:
            # 1013 "try again later": the client's reconnect lands on a replica with room.
            self.metrics.limit_breaches.labels("connections").inc()
            await ws.close(CLOSE_TRY_AGAIN_LATER, "too many connections")
            return
        address = _client_address(ws, self.config.limits.trusted_proxies)
        if not self.addresses.admit(address):
            self.metrics.limit_breaches.labels("connections_per_address").inc()
            await ws.close(CLOSE_POLICY, "too many connections from this address")
            return
        link = Link(
            ws,
            queue_max=self.config.server.send_queue_max,
            kind=kind,
            rate=message_bucket(self.config.limits, kind, now_ms()),
        )
        self.metrics.connections.labels(kind).inc()
        self.open_sockets += 1
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(link.run_writer)
                try:
                    # Authentication first: a refused socket is answered and closed (1008)
                    # before it can claim or register anything.
                    if kind == "node":
                        await self.nodes.serve(link, self.auth.admit_node(ws.request))
                    else:
                        await self.sessions.serve(link, self.auth.admit_session(ws.request))
                except Refusal as refusal:
                    self.auth.refuse(link, kind, refusal)
                link.close(1000)
        finally:
            self.open_sockets -= 1
            self.addresses.release(address)
            self.metrics.connections.labels(kind).dec()
            sent = ws.protocol.close_sent
            if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                # websockets closed it (1009): a frame beyond server.max_frame_bytes.
                self.metrics.limit_breaches.labels("frame_bytes").inc()

    # -- cross-instance delivery -----------------------------------------------------------

    async def deliver(self, envelope: Envelope) -> None:
        """Runtime handler: raising leaves the message pending (retried, then dead-lettered)."""
        with self.tracing.handle(envelope):
            if envelope.target_kind == "node":
                self.nodes.deliver(envelope)
            else:
                await self.sessions.deliver(envelope)

    async def ownership_lost(self, kind: str, ident: str) -> None:
        """A newer connection claimed this node or session on another replica: close ours (1008).
        Or we were fenced: nothing claimed it, so the client reconnects (1012), and a session is
        told of the utterances this replica can no longer finish."""
        if self.runtime.fenced:
            code = self.config.server.shutdown_close_code
            if kind == "node":
                self.nodes.evict(ident, code, "service restart")
            else:
                await self.sessions.fenced_out(ident, code)
        elif kind == "node":
            self.nodes.evict(ident)
        else:
            self.sessions.evict(ident)

    async def released(self, kind: str, idents: list[str]) -> None:
        """The takeover of a dead replica released its ids: its nodes that have not come back
        get ``scheduling.node_orphan_grace_ms``, then the sweep moves their jobs. Quiet for
        ``runtime.presence_refresh_ms`` (the dead replica's presence lapsed for longer) tells
        a node still on the dead replica's connection from one that registered again."""
        if kind != "node":
            return
        cut = await self.core.orphan_nodes(idents, quiet_ms=self.config.runtime.presence_refresh_ms)
        if cut:
            log.info(
                "%d node(s) of a dead replica not back yet: offline in %s ms unless they return",
                cut,
                self.config.scheduling.node_orphan_grace_ms,
            )

    async def obsolete(self, envelope: Envelope) -> bool:
        """A message held for a node with no live owner is at the end of its grace: a
        ``job_assign`` whose job has moved on meanwhile (another node or attempt, or ended:
        say, the node's replica was stopped and the sweep moved its jobs) is not needed any
        more and is dropped, not dead-lettered. One the job still waits on is dead-lettered."""
        if envelope.target_kind != "node" or envelope.kind != messages.FRAME:
            return False
        assigned = messages.assigned_job(envelope.payload)
        if assigned is None:
            return False
        job_id, attempt = assigned
        holder = await self.core.job_holder(job_id)
        return holder is None or (holder.node_id, holder.attempt) != (envelope.target_id, attempt)

    # -- failover --------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        interval = self.config.scheduling.sweep_interval_ms / 1000
        while True:
            more = False
            try:
                report = await self.core.sweep()
                self.redis_ok = True
                self.redis_wait.answered()
                if report.stalled_jobs or report.stalled_nodes:
                    log.warning(
                        "after a stall: %d deadline(s), %d node(s) given stall_grace_ms",
                        report.stalled_jobs,
                        report.stalled_nodes,
                    )
                    self.metrics.stall_extended.labels("job").inc(report.stalled_jobs)
                    self.metrics.stall_extended.labels("node").inc(report.stalled_nodes)
                self.metrics.slot_waiting.set(report.waiting)
                await self.jobs.carry_out_moves(Moves(report.actions, report.unreadable))
                await self.sessions.expire_rooms()
                more = report.more
            except Exception:
                self.redis_ok = False
                log.exception("sweep failed")
            if not more:
                await anyio.sleep(interval)

    # -- views -----------------------------------------------------------------------------

    async def cluster_view(self) -> ClusterView:
        return await read_cluster_view(self.config, self.redis, self.core)

    async def dlq_action(self, action: DlqActionName, chosen: DlqAction) -> DlqActionResult:
        """Replay or purge dead letters for the dashboard (the CLI's ``dlq replay|purge``)."""
        prefix = self.config.redis.key_prefix
        if action == "replay":
            report = await admin.dlq_replay(
                self.redis, self.config.runtime, prefix, ids=chosen.ids, all_entries=chosen.all
            )
            done = [r["id"] for r in report["replayed"]]
            skipped = [s["id"] for s in report["skipped"]]
        else:
            report = await admin.dlq_purge(
                self.redis, prefix, ids=chosen.ids, all_entries=chosen.all
            )
            done, skipped = report["purged"], []
        result = DlqActionResult(
            action=action, done=done, skipped=skipped, missing=report["missing"]
        )
        outcome = f"{len(done)} done, {len(skipped)} skipped, {len(result.missing)} missing"
        target = ops_audit.dlq_selection(chosen.all, chosen.ids)
        entry = OpsRecord(action=f"dlq {action}", target=target, outcome=outcome, source="api",
                          user="admin token", host=self.runtime.instance_id)  # fmt: skip
        await ops_audit.record(self.redis, prefix, self.config.server.ops_audit_max_entries, entry)
        return result

    async def stats_view(self) -> dict[str, Any]:
        return {
            "instance_id": self.runtime.instance_id,
            "web_clients": {"active_users": self.sessions.count()},
            "nodes": {"connected_nodes": self.nodes.count()},
        }


def _client_address(ws: ServerConnection, trusted_proxies: int) -> str:
    """The address a connection counts against (limits.connections_per_address)."""
    remote = ws.remote_address
    peer = str(remote[0]) if isinstance(remote, tuple) and remote else str(remote)
    forwarded = ws.request.headers.get_all("X-Forwarded-For") if ws.request else []
    return client_address(peer, ", ".join(forwarded) or None, trusted_proxies)


def _reachable_address(host: str, port: int) -> str:
    """What peers and operators can dial: a wildcard bind says nothing, the host name does."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"


def _version() -> str:
    try:
        return importlib.metadata.version("lingua-scheduler")
    except importlib.metadata.PackageNotFoundError:
        return "0"
