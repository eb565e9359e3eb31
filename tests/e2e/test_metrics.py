"""The metrics of real replicas, scraped from /metrics while real WebSocket clients use them: the
latency histograms after one utterance, the series every replica exports from the start, and
every metric the alert rules and the Grafana dashboard name."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.clients import SimBrowser, SimNode, is_job
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMMIT = "0123abcd"


@pytest.fixture(scope="module")
def replicas(redis_url: str, cluster_prefix: str) -> Iterator[list[Replica]]:
    """Three replicas of this module's own, built from a known commit (LINGUA_COMMIT)."""
    settings = {**FAST_SETTINGS, "LINGUA_COMMIT": COMMIT}
    started = [
        Replica(redis_url, f"m{i}", cluster_prefix, dict(settings)).start() for i in range(3)
    ]
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()


# -- scraping ------------------------------------------------------------------------------


def scrape(replica: Replica) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the replica's /metrics: (name, sorted labels) -> value."""
    status, body = replica.get("/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Histogram:
    """The count and sum of one histogram series on one replica, to compare before and after."""

    def __init__(self, replica: Replica, name: str, **labels: str) -> None:
        self.replica, self.name, self.labels = replica, name, labels
        self.count0, self.sum0 = self.read()

    def read(self) -> tuple[float, float]:
        samples = scrape(self.replica)
        return (
            value(samples, f"{self.name}_count", **self.labels),
            value(samples, f"{self.name}_sum", **self.labels),
        )

    async def observed(self, n: int = 1) -> float:
        """Wait for ``n`` more observations; their sum (seconds)."""
        await until(lambda: self.read()[0] >= self.count0 + n)
        count, total = self.read()
        assert count == self.count0 + n, f"{self.name}{self.labels}: {count - self.count0} new"
        return total - self.sum0


# -- the series every replica exports from the start -----------------------------------------


async def test_a_started_replica_exports_every_counter_and_its_build(
    replicas: list[Replica],
) -> None:
    samples = scrape(replicas[2])
    assert value(samples, "lingua_runtime_dead_lettered_total", reason="no_owner") == 0
    assert value(samples, "lingua_runtime_dead_lettered_total", reason="max_deliveries") == 0
    assert ("lingua_jobs_total", (("event", "no_node"),)) in samples
    assert ("lingua_client_errors_total", (("code", "NO_AVAILABLE_NODE"),)) in samples
    (build,) = [labels for name, labels in samples if name == "lingua_build_info"]
    assert dict(build)["commit"] == COMMIT and dict(build)["version"]
    assert value(samples, "lingua_build_info", **dict(build)) == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    assert any(name == "python_gc_collections_total" for name, _ in samples)
    # The runtime's scripts ran (presence, the inbox reader's group): they are timed.
    assert value(samples, "lingua_script_duration_seconds_count", script="register_presence") >= 1


# -- the latency histograms ----------------------------------------------------------------


async def test_one_utterance_across_two_replicas_fills_every_latency_histogram(
    replicas: list[Replica], peers, pair
) -> None:  # type: ignore[no-untyped-def]
    """The browser is on m0, the node on m1: the job_assign hops m0 -> m1, the result m1 -> m0."""
    src, tgt = pair
    session_side, node_side = replicas[0], replicas[1]
    node = await peers(SimNode(node_side.ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(session_side.ws + "/ws/session", src, tgt))
    await browser.init()
    dispatch = Histogram(node_side, "lingua_dispatch_latency_seconds")
    utterance = Histogram(session_side, "lingua_utterance_latency_seconds")
    hop_to_node = Histogram(node_side, "lingua_runtime_inbox_hop_seconds")
    hop_to_session = Histogram(session_side, "lingua_runtime_inbox_hop_seconds")
    dispatch_script = Histogram(
        session_side, "lingua_script_duration_seconds", script="dispatch_job"
    )
    complete_script = Histogram(node_side, "lingua_script_duration_seconds", script="complete_job")

    started = time.monotonic()
    await browser.speak(5)  # the manual cut finalizes at once (no hangover in FAST_SETTINGS)
    job = await node.wait_for(is_job)
    assigned_after = time.monotonic() - started
    assert await dispatch.observed() <= assigned_after
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])
    answered_after = time.monotonic() - started

    # Finalize happened after `started` and the frame was queued before the client read it.
    spent = await utterance.observed()
    assert 0 < spent <= answered_after
    assert await hop_to_node.observed() <= assigned_after  # the job_assign (one hop)
    # Every message for the session came through m0's inbox: the DISPATCHED event is written
    # in process, so the result is the only one.
    assert await hop_to_session.observed() <= answered_after
    assert 0 < await dispatch_script.observed() <= assigned_after
    assert 0 < await complete_script.observed() <= answered_after


async def test_a_room_member_on_a_third_replica_counts_the_latency_where_it_gets_the_result(
    replicas: list[Replica], peers, pair
) -> None:  # type: ignore[no-untyped-def]
    """Speaker on m0, listener on m2, node on m1: the listener's translation_result is written
    on m2, which measures from the finalize time carried with the relayed frame."""
    src, tgt = pair
    node = await peers(SimNode(replicas[1].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    speaker = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, src))
    await speaker.init()
    await speaker.send({"type": "room_create", "client_ts": 1, "preferred_lang": src})
    room = (await speaker.wait_type("room_create_ack"))["room_code"]
    listener = await peers(SimBrowser(replicas[2].ws + "/ws/session", tgt, src))
    await listener.init()
    await listener.send(
        {"type": "room_join", "room_code": room, "display_name": "l", "preferred_lang": tgt}
    )
    await listener.wait_type("room_members")
    at_listener = Histogram(replicas[2], "lingua_utterance_latency_seconds")

    started = time.monotonic()
    await speaker.speak(5)
    job = await node.wait_for(lambda m: is_job(m) and m["tgt_lang"] == tgt)
    await node.send(node.result_for(job))
    await listener.wait_type("translation_result", job_id=job["job_id"])
    assert 0 < await at_listener.observed() <= time.monotonic() - started


# -- what the alert rules and the dashboard query --------------------------------------------

# Not metric names: PromQL keywords and what Prometheus itself adds to every target.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_PROMQL_WORDS |= {"and", "or", "unless", "inf", "nan"}
_FROM_PROMETHEUS = {"up"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "lingua-scheduler.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: what is left once strings, label matchers,
    ranges, grouping clauses, function calls and keywords are taken out."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+|ms|[smhdwy])?\b", " ", text)  # numbers, durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_the_expression_parser_finds_metrics_not_functions_or_labels() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, script) (rate(lingua_script_duration_seconds_bucket"
        '{job="x"}[5m]))) > on (instance) group_left lingua_ready offset 5m and up == 0'
    )
    assert metric_names(expr) == {"lingua_script_duration_seconds_bucket", "lingua_ready", "up"}


async def test_every_alert_and_dashboard_expression_names_a_metric_a_replica_exports(
    replicas: list[Replica], peers, pair
) -> None:  # type: ignore[no-untyped-def]
    # One utterance first, so every labelled histogram (scripts) has series.
    src, tgt = pair
    node = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(5)
    await node.send(node.result_for(await node.wait_for(is_job)))
    await browser.wait_type("translation_result")

    exported = {name for name, _ in scrape(replicas[0])}
    exprs = dashboard_exprs() + alert_exprs()
    assert len(dashboard_exprs()) >= 10 and len(alert_exprs()) >= 9
    missing = {
        (name, expr)
        for expr in exprs
        for name in metric_names(expr) - _FROM_PROMETHEUS
        if name not in exported
    }
    assert not missing, f"not exported by a replica: {sorted(missing)}"
    for expr in exprs:
        assert metric_names(expr), f"names no metric: {expr}"
        if "histogram_quantile" in expr:
            assert all(n.endswith("_bucket") for n in metric_names(expr)), expr
