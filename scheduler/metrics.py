"""The replica's own Prometheus metrics (the runtime registers its own, ``lingua_runtime_*``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler.audit import CHECKS, AuditReport

__all__ = ["AuditMetrics", "ReplicaMetrics"]


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
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        self.connections = Gauge(
            "lingua_connections", "Open WebSocket connections", ["kind"], registry=registry
        )
        self.frames_in = Counter(
            "lingua_frames_received_total", "Frames received", ["kind"], registry=registry
        )
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
        self.rooms_expired = Counter(
            "lingua_rooms_expired_total",
            "rooms expired after session.room_idle_ms without activity",
            registry=registry,
        )
        self.ready = Gauge(
            "lingua_ready",
            "1 when this replica takes traffic (started, not draining, Redis reachable)",
            registry=registry,
        )
        self.ready.set_function(lambda: float(ready()))
        self.jobs = Counter(
            "lingua_jobs_total", "Job lifecycle events", ["event"], registry=registry
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
        self.audit = AuditMetrics(registry)
