"""Prometheus metrics of the runtime, registered in the registry the daemon serves on /metrics.

Names are part of the operations contract: ``deploy/prometheus/alerts.yaml`` and the Grafana
dashboard use them.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cross_instance.envelope import DeadReason, DropReason, LostReason

__all__ = ["INBOX_HOP_BUCKETS", "SCRIPT_BUCKETS", "RuntimeMetrics"]

# A script runs in Redis in well under a millisecond; a slow one (a scan, a big batch) or a busy
# Redis shows in the upper buckets.
SCRIPT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# One hop through a peer's inbox: milliseconds when it keeps up, seconds behind a slow handler,
# up to reclaim_min_idle_ms and beyond for retried entries (above 10 s: +Inf).
INBOX_HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        for dead_reason in get_args(DeadReason):
            self.dead_lettered.labels(dead_reason)
        self.dropped = Counter(
            "lingua_runtime_dropped_total",
            "Non-resumable messages dropped because their target ended, by reason (ended: its "
            "owner released it; not_owned_here: its handler failed after this replica let the "
            "target go; obsolete: held past the route grace, and no longer needed)",
            ["reason"],
            registry=r,
        )
        for drop_reason in get_args(DropReason):
            self.dropped.labels(drop_reason)
        self.lost = Counter(
            "lingua_runtime_lost_total",
            "Messages lost although they should have reached the DLQ, by reason "
            "(dlq_unreachable: sends still held when this replica left, which Redis did not "
            "take); each batch is also logged as an error",
            ["reason"],
            registry=r,
        )
        for lost_reason in get_args(LostReason):
            self.lost.labels(lost_reason)
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
        self.script_duration = Histogram(
            "lingua_script_duration_seconds",
            "Duration of each Lua script call as the replica sees it (round trip included), by "
            "script name: runtime, scheduling, rooms and audit scripts",
            ["script"],
            buckets=SCRIPT_BUCKETS,
            registry=r,
        )
        self.inbox_hop = Histogram(
            "lingua_runtime_inbox_hop_seconds",
            "From a message's creation on the sending replica to its successful handling from "
            "this replica's inbox (wall clocks of two hosts: keep them in sync)",
            buckets=INBOX_HOP_BUCKETS,
            registry=r,
        )

    def time_script(self, name: str, seconds: float) -> None:
        """A :data:`~cross_instance.lua.ScriptTimer`: one script call took ``seconds``."""
        self.script_duration.labels(name).observe(seconds)

    def observe_hop(self, created_ms: int, handled_ms: int) -> None:
        """A message created at ``created_ms`` (sender's clock) was handled here at
        ``handled_ms``; a message without a creation time is not counted, a clock step back
        counts as 0."""
        if created_ms > 0:
            self.inbox_hop.observe(max(0, handled_ms - created_ms) / 1000)
