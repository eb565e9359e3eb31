"""Prometheus metrics of the runtime, registered in the registry the daemon serves on /metrics.

Names are part of the operations contract: ``deploy/prometheus/alerts.yaml`` and the Grafana
dashboard use them.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from cross_instance.envelope import DropReason

__all__ = ["RuntimeMetrics"]


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # A private registry by default: several runtimes in one process (tests) must not clash.
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.forwarded = Counter(
            "lingua_runtime_forwarded_total",
            "Messages added to another replica's inbox (sends, re-routes, takeovers)",
            registry=r,
        )
        self.delivered_local = Counter(
            "lingua_runtime_delivered_local_total",
            "Messages handled in process without a Redis round trip (the owner is this replica)",
            registry=r,
        )
        self.delivered_remote = Counter(
            "lingua_runtime_delivered_remote_total",
            "Messages handled from this replica's inbox",
            registry=r,
        )
        self.reclaimed = Counter(
            "lingua_runtime_reclaimed_total",
            "Stuck inbox entries given back to the handler by reclaim",
            registry=r,
        )
        self.redelivered = Counter(
            "lingua_runtime_redelivered_total",
            "Inbox entries handled successfully after an earlier failed attempt",
            registry=r,
        )
        self.duplicates = Counter(
            "lingua_runtime_duplicates_suppressed_total",
            "Deliveries of an already handled message id, acknowledged without effect",
            registry=r,
        )
        self.dead_lettered = Counter(
            "lingua_runtime_dead_lettered_total",
            "Messages moved to the DLQ",
            ["reason"],
            registry=r,
        )
        self.dropped = Counter(
            "lingua_runtime_dropped_total",
            "Non-resumable messages dropped because their target ended, by reason (ended: its "
            "owner released it; not_owned_here: its handler failed after this replica let the "
            "target go)",
            ["reason"],
            registry=r,
        )
        for drop_reason in get_args(DropReason):
            self.dropped.labels(drop_reason)
        self.inbox_length = Gauge(
            "lingua_runtime_inbox_length", "Entries in this replica's inbox", registry=r
        )
        self.oldest_pending_age = Gauge(
            "lingua_runtime_oldest_pending_age_seconds",
            "Age of the oldest pending (delivered, unacknowledged) inbox entry",
            registry=r,
        )
        self.presence_refresh_failures = Counter(
            "lingua_runtime_presence_refresh_failures_total",
            "Presence refreshes that failed (Redis unreachable or slow)",
            registry=r,
        )
        self.inbox_read_failures = Counter(
            "lingua_runtime_inbox_read_failures_total",
            "Inbox reads (XREADGROUP) that failed; the reader backs off and reads again",
            registry=r,
        )
        self.takeovers = Counter(
            "lingua_runtime_takeovers_total",
            "Inboxes of dead replicas taken over and retired by this replica",
            registry=r,
        )
        self.held = Gauge(
            "lingua_runtime_held_messages",
            "Messages held in memory waiting for their target to get a live owner",
            registry=r,
        )
