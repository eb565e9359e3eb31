"""The Prometheus alert rules: valid, each with a `promtool test rules` case that fires it
(first-event cases included), and each with a runbook section in docs/operations.md."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from tests.deploy.tools import ROOT, require_tool

RULES_DIR = ROOT / "deploy" / "prometheus"
RUNBOOK_BASE = "https://github.com/lingua-scheduler/lingua-scheduler/blob/main/docs/operations.md"
# Rare events: the first one must fire its alert (the series goes from 0 to 1).
FIRST_EVENT_ALERTS = {
    "LinguaDeadLetters": "lingua_runtime_dead_lettered_total",
    "LinguaNoAvailableNode": 'lingua_jobs_total{event="no_node"',
}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((RULES_DIR / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _cases() -> list[dict[str, Any]]:
    return list(yaml.safe_load((RULES_DIR / "alerts.test.yaml").read_text())["tests"])


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", heading.strip().lower()))


def test_promtool_accepts_the_rules() -> None:
    promtool = require_tool("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", "alerts.yaml"], cwd=RULES_DIR, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_rule_tests_pass() -> None:
    promtool = require_tool("promtool")
    done = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yaml"],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in _cases():
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names - fired == set(), "alerts no case fires"
    assert names - quiet == set(), "alerts no case shows quiet"


def test_rare_event_alerts_are_tested_on_their_first_event() -> None:
    for alert, series_start in FIRST_EVENT_ALERTS.items():
        first_event_cases = [
            case
            for case in _cases()
            if any(c["alertname"] == alert and c.get("exp_alerts") for c in case["alert_rule_test"])
            and any(
                s["series"].startswith(series_start) and _values(s["values"])[:1] == [0.0]
                and max(_values(s["values"])) == 1.0
                for s in case["input_series"]
            )
        ]  # fmt: skip
        assert first_event_cases, f"{alert}: no case where one event (0 then 1) fires it"


def _values(text: str) -> list[float]:
    return [float(v) for v in text.split() if v != "_"]


def test_every_alert_links_its_runbook_section() -> None:
    headings = {
        _slug(line.lstrip("#"))
        for line in (ROOT / "docs" / "operations.md").read_text().splitlines()
        if line.startswith("#")
    }
    for rule in _rules():
        annotations = rule["annotations"]
        assert "runbook" not in annotations, rule["alert"]
        url = annotations.get("runbook_url", "")
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_BASE, f"{rule['alert']}: runbook_url {url!r}"
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: anchor {anchor!r}"
        assert anchor in headings, f"{rule['alert']}: no section {anchor!r} in docs/operations.md"
