"""The metrics a replica exports from the start: every labelled counter at 0 for each known label
value (so an alert on ``increase(...) > 0`` fires on the first event), the process, GC and
platform collectors, ``lingua_build_info``; and every label value the code counts is a known one."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import get_args

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis.asyncio import Redis

from cross_instance.envelope import DeadReason, DropReason, LostReason
from scheduler.audit import CHECKS
from scheduler.config import load_config
from scheduler.metrics import CLIENT_ERROR_CODES, CONNECTION_KINDS, JOB_EVENTS, OPS_REFUSED_REASONS
from scheduler.replica import Replica

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported() -> dict[str, list[Sample]]:
    """What a replica exports before anything happened: its /metrics body, parsed. The Redis
    client is never used (a replica connects when it runs, not when it is built)."""
    # Tracing on (the test install has the extra): its counter exists only then.
    config = load_config(environ={}, overrides={"tracing": {"enabled": True}})
    replica = Replica(config, Redis.from_url("redis://127.0.0.1:1/0"))
    body = generate_latest(replica.registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


def _labels(samples: list[Sample], label: str, suffix: str = "_total") -> set[str]:
    return {s.labels[label] for s in samples if s.name.endswith(suffix) and label in s.labels}


def test_every_counter_has_its_series_at_zero_before_the_first_event(
    exported: dict[str, list[Sample]],
) -> None:
    """A labelled counter never incremented has no series at all unless it was initialised
    for its labels: Prometheus then sees its first event as a series born at 1 (no increase)."""
    counters = {
        name: samples
        for name, samples in exported.items()
        if name.startswith("lingua_") and any(s.name.endswith("_total") for s in samples)
    }
    declared = set(re.findall(r'\bCounter\(\s*"(lingua_\w+?)(?:_total)?"', _sources()))
    assert declared, "no counter declarations found in scheduler/ and cross_instance/"
    assert {n.removesuffix("_total") for n in declared} <= set(counters), (
        "counters with no series at startup"
    )
    for name, samples in counters.items():
        totals = [s for s in samples if s.name.endswith("_total")]
        assert totals, f"{name}: no series"
        assert all(s.value == 0 for s in totals), f"{name}: not 0 at startup: {totals}"


def test_known_label_values_are_exported(exported: dict[str, list[Sample]]) -> None:
    def labels(name: str, label: str) -> set[str]:
        return _labels(exported[name], label)

    assert labels("lingua_runtime_dead_lettered", "reason") == set(get_args(DeadReason))
    assert labels("lingua_runtime_dropped", "reason") == set(get_args(DropReason))
    assert labels("lingua_runtime_lost", "reason") == set(get_args(LostReason))
    assert labels("lingua_jobs", "event") == set(JOB_EVENTS)
    assert labels("lingua_client_errors", "code") == set(CLIENT_ERROR_CODES)
    assert labels("lingua_client_errors_suppressed", "code") == set(CLIENT_ERROR_CODES)
    assert labels("lingua_frames_received", "kind") == set(CONNECTION_KINDS)
    assert labels("lingua_ops_requests_refused", "reason") == set(OPS_REFUSED_REASONS)
    assert labels("lingua_audit_runs", "outcome") == {"clean", "violations", "failed"}
    assert _labels(exported["lingua_audit_violations"], "check", "") == set(CHECKS)
    assert _labels(exported["lingua_connections"], "kind", "") == set(CONNECTION_KINDS)


def test_process_gc_platform_and_build_info(exported: dict[str, list[Sample]]) -> None:
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= set(
        exported
    )
    assert "python_gc_collections" in exported and "python_info" in exported
    (info,) = exported["lingua_build_info"]
    assert info.value == 1
    assert info.labels["python"] == platform.python_version()
    assert info.labels["version"] and "commit" in info.labels


def test_latency_histograms_are_exported_before_the_first_observation(
    exported: dict[str, list[Sample]],
) -> None:
    for name in (
        "lingua_dispatch_latency_seconds",
        "lingua_utterance_latency_seconds",
        "lingua_runtime_inbox_hop_seconds",
    ):
        count = [s for s in exported[name] if s.name == f"{name}_count"]
        assert [s.value for s in count] == [0], name
    # Labelled by script: a series per script appears with its first call.
    assert "lingua_script_duration_seconds" in exported


# -- every label value the code counts is a known one ---------------------------------------


def _sources() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for package in ("scheduler", "cross_instance")
        for path in sorted((ROOT / package).rglob("*.py"))
    )


def _literal_labels(attribute: str) -> set[str]:
    return set(re.findall(rf'\.{attribute}\.labels\(\s*"([^"]+)"', _sources()))


def test_every_job_event_counted_in_the_code_is_pre_initialised() -> None:
    used = _literal_labels("jobs")
    assert "dispatched" in used  # the pattern still finds the calls
    assert used <= set(JOB_EVENTS), f"add to scheduler.metrics.JOB_EVENTS: {used - set(JOB_EVENTS)}"


def test_every_error_code_sent_to_a_client_is_pre_initialised() -> None:
    sources = _sources()
    used = (
        _literal_labels("errors_sent")
        | set(re.findall(r'_error\(\s*(?:session\.)?link,\s*"([A-Z_]+)"', sources))
        | set(re.findall(r'InputRejected\(\s*"([A-Z_]+)"', sources))
        | set(re.findall(r'ErrorMessage\(\s*code="([A-Z_]+)"', sources))
    )
    assert {"INVALID_MESSAGE", "INVALID_SESSION", "SESSION_CLOSED", "PROCESSING_ERROR"} <= used
    missing = used - set(CLIENT_ERROR_CODES)
    assert not missing, f"add to scheduler.metrics.CLIENT_ERROR_CODES: {missing}"


def test_runtime_reasons_counted_in_the_code_are_pre_initialised() -> None:
    assert _literal_labels("dropped") <= set(get_args(DropReason))
    assert _literal_labels("dead_lettered") <= set(get_args(DeadReason))
    assert _literal_labels("lost") <= set(get_args(LostReason))


def test_docs_list_every_metric_a_replica_exports(exported: dict[str, list[Sample]]) -> None:
    """docs/operations.md, "Metrics": one table row per lingua_ metric, with its labels."""
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = docs[docs.index("\n## Metrics\n") :]
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(lingua_\w+)` \|\s*\w*\s*\|([^|]*)\|", section, re.M)
    }
    for name, samples in exported.items():
        if not name.startswith("lingua_") or name.endswith("_created"):
            continue
        documented = name + "_total" if name + "_total" in rows else name
        assert documented in rows, f"docs/operations.md, Metrics: no row for {documented}"
        labels = {k for s in samples for k in s.labels if k != "le"}
        if samples:  # a labelled histogram has no series before its first observation
            assert set(re.findall(r"`(\w+)`", rows[documented])) == labels, documented
