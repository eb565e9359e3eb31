"""The replica's own Prometheus metrics (the runtime registers its own, ``lingua_runtime_*``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ReplicaMetrics"]


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
