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
