"""deploy/grafana/lingua-scheduler.json: a dashboard Grafana can import, with a panel for each
latency (quantiles from the histograms' buckets) and for the runtime's failure signals. That
every metric it names is exported: tests/e2e/test_metrics.py, against a running replica."""

from __future__ import annotations

import json
from typing import Any

from tests.deploy.tools import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "lingua-scheduler.json"


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"]]


def test_panels_have_unique_ids_targets_and_do_not_overlap() -> None:
    panels = _panels()
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["title"] and panel["targets"], panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_latency_has_quantiles_from_its_buckets() -> None:
    for histogram in (
        "lingua_utterance_latency_seconds",
        "lingua_dispatch_latency_seconds",
        "lingua_runtime_inbox_hop_seconds",
        "lingua_script_duration_seconds",
    ):
        quantiles = [
            e
            for e in _exprs()
            if e.startswith("histogram_quantile(") and f"{histogram}_bucket[" in e
        ]
        assert quantiles, f"no quantile panel for {histogram}"
        assert all("by (le" in e for e in quantiles), quantiles


def test_the_runtime_failure_signals_have_panels() -> None:
    text = "\n".join(_exprs())
    for metric in (
        "lingua_runtime_takeovers_total",
        "lingua_runtime_held_messages",
        "lingua_runtime_inbox_read_failures_total",
        "lingua_runtime_presence_refresh_failures_total",
        "lingua_runtime_dead_lettered_total",
        "process_resident_memory_bytes",
        "lingua_build_info",
    ):
        assert metric in text, f"no panel shows {metric}"
