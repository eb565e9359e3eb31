"""The replica's own Prometheus metrics (the runtime registers its own, ``lingua_runtime_*``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

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
