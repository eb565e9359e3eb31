"""The replica's own Prometheus metrics (the runtime registers its own, ``lingua_runtime_*``).

Every labelled counter is exported at 0 for each of its known label values from the start: an
alert on ``increase(...) > 0`` sees a series go from 0 to 1 at its first event, where a series
born at 1 shows no increase at all (``tests/unit/test_metrics.py`` walks the registry).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Final, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from scheduler.audit import CHECKS, AuditReport
from scheduler.auth import AUTH_ERROR_CODES
from scheduler.limits import LIMITS, PENDING_JOBS_CODE, RATE_LIMITED_CODE
from scheduler.messages import FailureCode
from scheduler.protocol import ERROR_CODES

__all__ = [
    "CLIENT_ERROR_CODES",
    "CONNECTION_KINDS",
    "DISPATCH_BUCKETS",
    "JOB_EVENTS",
    "OPS_REFUSED_REASONS",
    "OTHER_ERROR_CODE",
    "REDIS_WAIT_OUTCOMES",
    "REDIS_WAIT_PATHS",
    "UTTERANCE_BUCKETS",
    "AuditMetrics",
    "ReplicaMetrics",
    "error_code_label",
]

# lingua_jobs_total{event}: every event the job lifecycle and the gateways count.
JOB_EVENTS: Final = (
    "dispatched",  # a job placed on a node (at once, or after waiting for a slot)
    "waiting",  # every node of its pair was busy: it waits for a slot
    "completed",  # the first valid result, accepted by the core
    "result_refused",  # a stale, foreign or repeated result
    "reassigned",  # failover moved it to another node
    "held",  # failover kept it for its disconnected node
    "cancelled",  # a node was told job_cancel
    "failed",  # it ended without a result (the client was told)
    "abandoned",  # its session ended first: not moved on, nor placed after a slot wait
    "no_node",  # no node for its pair at dispatch (NO_AVAILABLE_NODE)
    "move_unreadable",  # a failover move whose stored job could not be read
    "dispatch_queue_full",  # the session had session.dispatch_queue_max utterances waiting
    "refused_draining",  # audio a draining replica refused (the session was told once)
    # Redis away past redis.outage_wait_ms (issue 12): a result not completed (the job moves or
    # fails at its deadline), a result or job_assign not sent; a node frame (heartbeat,
    # progress) skipped; a registration closed 1013 (the node reconnects)
    "result_unsaved",
    "result_unsent",
    "send_unsent",
    "node_frame_unsaved",
    "node_register_unsaved",
)
# lingua_redis_waits_total: the calls that wait for Redis (scheduler.redis_wait), and outcomes.
REDIS_WAIT_PATHS: Final = ("result", "dispatch", "targets", "send")
REDIS_WAIT_OUTCOMES: Final = ("through", "gave_up")
# /ws/node and /ws/session.
CONNECTION_KINDS: Final = ("node", "session")
# lingua_ops_requests_refused_total{reason}: why the operator routes refused a request.
OPS_REFUSED_REASONS: Final = ("other_listener", "bad_token", "forbidden")
# Every code an error frame to a client can carry: the protocol's, the job failures', the
# limits' (scheduler/limits.py), and the node's own failure code, relayed; a code a node made
# up is counted as OTHER (a node must not grow the label set).
OTHER_ERROR_CODE: Final = "OTHER"
CLIENT_ERROR_CODES: Final = tuple(
    sorted(
        ERROR_CODES
        | set(get_args(FailureCode))
        | {RATE_LIMITED_CODE, PENDING_JOBS_CODE, "PROCESSING_ERROR", OTHER_ERROR_CODE}
        | set(AUTH_ERROR_CODES)
    )
)


def error_code_label(code: str) -> str:
    """The ``code`` label of an error frame's counters."""
    return code if code in CLIENT_ERROR_CODES else OTHER_ERROR_CODE


# Finalize to job_assign on the node's socket: a script and a hop, milliseconds when healthy.
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Finalize to translation_result: the node's ASR, NMT and TTS included, seconds.
UTTERANCE_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)


class AuditMetrics:
    """The periodic audit's findings (:mod:`scheduler.audit`), every check present from the
    start at 0 so an alert sees a value before the first violation."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.violations = Gauge(
            "lingua_audit_violations",
            "Violations the last audit run found, per check (docs/operations.md, Audit)",
            ["check"],
            registry=registry,
        )
        for check in CHECKS:
            self.violations.labels(check).set(0)
        self.runs = Counter(
            "lingua_audit_runs_total",
            "Audit runs by outcome: clean, violations, failed (Redis unreachable or slow)",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("clean", "violations", "failed"):
            self.runs.labels(outcome)
        self.last_run = Gauge(
            "lingua_audit_last_run_timestamp_seconds",
            "When the last audit run finished (Redis server clock)",
            registry=registry,
        )
        self.dlq_depth = Gauge(
            "lingua_audit_dlq_depth", "Dead letters in the DLQ at the last audit", registry=registry
        )
        self.dlq_oldest_age = Gauge(
            "lingua_audit_dlq_oldest_age_seconds",
            "Age of the oldest dead letter at the last audit (0: the DLQ is empty)",
            registry=registry,
        )

    def record(self, report: AuditReport) -> None:
        for check, result in report.checks.items():
            self.violations.labels(check).set(result.count)
        self.runs.labels("clean" if report.ok else "violations").inc()
        self.last_run.set(report.now_ms / 1000)
        self.dlq_depth.set(report.dlq_depth)
        self.dlq_oldest_age.set(report.dlq_oldest_age_ms / 1000)

    def failed(self) -> None:
        self.runs.labels("failed").inc()


class ReplicaMetrics:
    def __init__(
        self, registry: CollectorRegistry, ready: Callable[[], bool], version: str = ""
    ) -> None:
        # The process (CPU, memory, open fds), the interpreter's GC, the platform: the same
        # collectors the default registry has, on ours.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.build_info = Gauge(
            "lingua_build_info",
            "Always 1: the version of lingua-scheduler, of Python, and the commit it was built "
            "from (LINGUA_COMMIT; empty when unknown)",
            ["version", "python", "commit"],
            registry=registry,
        )
        self.build_info.labels(
            version, platform.python_version(), os.environ.get("LINGUA_COMMIT", "")
        ).set(1)
        self.connections = Gauge(
            "lingua_connections", "Open WebSocket connections", ["kind"], registry=registry
        )
        self.frames_in = Counter(
            "lingua_frames_received_total", "Frames received", ["kind"], registry=registry
        )
        for kind in CONNECTION_KINDS:
            self.connections.labels(kind)
            self.frames_in.labels(kind)
        self.errors_sent = Counter(
            "lingua_client_errors_total",
            "error frames sent to clients",
            ["code"],
            registry=registry,
        )
        self.errors_suppressed = Counter(
            "lingua_client_errors_suppressed_total",
            "error frames not sent: the same code reached the session within "
            "session.error_repeat_window_ms",
            ["code"],
            registry=registry,
        )
        for code in CLIENT_ERROR_CODES:
            self.errors_sent.labels(code)
            self.errors_suppressed.labels(code)
        self.rooms_expired = Counter(
            "lingua_rooms_expired_total",
            "rooms expired after session.room_idle_ms without activity",
            registry=registry,
        )
        self.ops_refused = Counter(
            "lingua_ops_requests_refused_total",
            "Operator HTTP requests refused: other_listener (an operator route asked on the "
            "public port, or /ws/* on the operator port), bad_token (401), forbidden (403)",
            ["reason"],
            registry=registry,
        )
        for reason in OPS_REFUSED_REASONS:
            self.ops_refused.labels(reason)
        self.ready = Gauge(
            "lingua_ready",
            "1 when this replica takes traffic (started, not draining, Redis reachable)",
            registry=registry,
        )
        self.ready.set_function(lambda: float(ready()))
        self.jobs = Counter(
            "lingua_jobs_total", "Job lifecycle events", ["event"], registry=registry
        )
        for event in JOB_EVENTS:
            self.jobs.labels(event)
        self.dispatch_latency = Histogram(
            "lingua_dispatch_latency_seconds",
            "From an utterance's finalize to its job_assign handed to the node's socket, on the "
            "node's replica (a job's first placement; after a wait for a slot or a failover "
            "it is not counted)",
            buckets=DISPATCH_BUCKETS,
            registry=registry,
        )
        self.utterance_latency = Histogram(
            "lingua_utterance_latency_seconds",
            "From an utterance's finalize to its translation_result handed to a client's socket "
            "(each room member who gets it), on that client's replica",
            buckets=UTTERANCE_BUCKETS,
            registry=registry,
        )
        # Jobs that wait for a slot while every node of their pair is busy (issue 11).
        self.slot_waiting = Gauge(
            "lingua_slot_waiting",
            "Jobs of the domain waiting for a slot, as of this replica's last sweep",
            registry=registry,
        )
        self.slot_wait = Histogram(
            "lingua_slot_wait_seconds",
            "How long a job waited for a slot before it was placed on a node",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.slot_wait_expired = Counter(
            "lingua_slot_wait_expired_total",
            "Jobs whose wait for a slot ran out (the client got NO_AVAILABLE_NODE)",
            registry=registry,
        )
        self.drain_unfinished = Counter(
            "lingua_drain_unfinished_total",
            "Sockets a drain closed with work still unanswered after server.drain_results_ms: "
            "a node still running jobs, or a session told its unanswered utterances failed",
            ["kind"],
            registry=registry,
        )
        for kind in CONNECTION_KINDS:
            self.drain_unfinished.labels(kind)
        # Calls that waited for Redis (issue 12): "through" once it answered, "gave_up" after
        # redis.outage_wait_ms; path: result | dispatch | targets | send.
        self.redis_waits = Counter(
            "lingua_redis_waits_total",
            "Calls that waited for an unavailable Redis, by path and outcome",
            ["path", "outcome"],
            registry=registry,
        )
        for path in REDIS_WAIT_PATHS:
            for outcome in REDIS_WAIT_OUTCOMES:
                self.redis_waits.labels(path, outcome)
        self.redis_waiting = Gauge(
            "lingua_redis_waiting",
            "Calls waiting for an unavailable Redis now (readiness is false meanwhile)",
            registry=registry,
        )
        # Deadlines and node liveness that lapsed while Redis was away, given stall_grace_ms.
        self.stall_extended = Counter(
            "lingua_stall_extended_total",
            "Deadlines (kind=job) and node liveness (kind=node) moved on after a Redis stall",
            ["kind"],
            registry=registry,
        )
        for kind in ("job", "node"):
            self.stall_extended.labels(kind)
        self.audit = AuditMetrics(registry)
        self.limit_breaches = Counter(
            "lingua_limit_breaches_total",
            "Requests refused by a limit (docs/security.md, Limits), per limit",
            ["limit"],
            registry=registry,
        )
        for limit in LIMITS:
            self.limit_breaches.labels(limit)

    def observe_dispatch(self, finalized_ms: int, sent_ms: int) -> None:
        """A job_assign was handed to its node's socket; ``finalized_ms`` 0: not a first
        placement (not counted)."""
        if finalized_ms > 0:
            self.dispatch_latency.observe(max(0, sent_ms - finalized_ms) / 1000)

    def observe_utterance(self, finalized_ms: int, sent_ms: int) -> None:
        """A translation_result was handed to a client's socket; ``finalized_ms`` 0: unknown."""
        if finalized_ms > 0:
            self.utterance_latency.observe(max(0, sent_ms - finalized_ms) / 1000)
