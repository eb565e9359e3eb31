"""The dashboard in a real headless Chromium against two real ``serve`` replicas with a node, a
session, a job in flight and two dead letters: the rendered values match the API and the CLI, a
hostile id stays text, purge and replay work from the page (with the admin token) and the DLQ goes
to 0. The screenshot is kept in ``var/test-artefacts/dashboard.png``.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` package (no
browser download): the test fails, never skips, when either is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest

from cross_instance.clock import now_ms
from cross_instance.config import RedisConfig
from cross_instance.envelope import Envelope, Trail, new_message_id
from cross_instance.keys import RuntimeKeys
from cross_instance.redis_client import AnyRedis
from cross_instance.runtime import Runtime
from scheduler.cluster_view import ClusterView
from tests.cli.conftest import clean_env, run_cli
from tests.e2e.clients import SimBrowser, SimNode, opus_plan_a
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import ROOT, Replica
from tests.runtime.conftest import Recorder, fast_config
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTEFACTS = ROOT / "var" / "test-artefacts"
TOKEN = "dashboard-test-token"
NODE_ID = "node-dash0001"
HOSTILE = "<img/src=x/onerror=window.__xss=1>"
PROBE = '{"type":"dashboard_probe","replayed":true}'

# What the page shows, per table: rows keyed by their id, cells by the model path they render.
SNAPSHOT_JS = """() => {
  const tables = {};
  for (const t of document.querySelectorAll("table")) {
    tables[t.id] = {};
    for (const r of t.rows) {
      if (r.dataset.key === undefined) continue;
      const cells = {};
      for (const td of r.cells) if (td.dataset.field) cells[td.dataset.field] = td.textContent;
      tables[t.id][r.dataset.key] = cells;
    }
  }
  const cards = {};
  for (const c of document.querySelectorAll(".card")) cards[c.dataset.field] = c.querySelector("b").textContent;
  return {tables, cards, err: document.getElementById("err").textContent,
          reasons: document.getElementById("dlq-reasons").textContent,
          images: document.querySelectorAll("img").length, xss: window.__xss === undefined ? null : window.__xss};
}"""


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": False})  # Playwright drives its driver on plain asyncio


def require_chromium() -> str:
    """Debian's chromium, or the test fails (never skips) saying how to install it."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); "
            ".ci/run does it",
            pytrace=False,
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is missing: make install (pip install -e '.[test]')", pytrace=False)
    return CHROMIUM


@pytest.fixture
def two_replicas(redis_config: RedisConfig) -> Iterator[list[Replica]]:
    settings = {
        **FAST_SETTINGS,
        "LINGUA_SCHEDULING__JOB_TIMEOUT_MS": "120000",  # the job stays in flight for the test
        "LINGUA_SERVER__ADMIN_TOKEN": TOKEN,
        "LINGUA_SERVER__DASHBOARD_REFRESH_MS": "500",
    }
    started: list[Replica] = []
    try:
        for name in ("dash-a", "dash-b"):
            started.append(
                Replica(redis_config.url, name, redis_config.key_prefix, settings).start()
            )
        yield started
    finally:
        for replica in started:
            replica.stop()


async def dead_letter(redis_config: RedisConfig, redis: AnyRedis) -> None:
    """Two no_owner dead letters, sent by a runtime that then leaves: a frame for the node
    before it connects (replayed later) and one for a session whose id is markup. The runtime
    refuses to send to such an id (one id alphabet), so that one is dead-lettered directly, as
    an entry written by an older version or by hand could be: the page must still show it as
    text."""
    runtime = Runtime(redis_config, fast_config(instance_id="dlq-maker"), Recorder())
    async with runtime:
        await runtime.send_to_node(NODE_ID, "frame", PROBE)
        hostile = Envelope(
            message_id=new_message_id(),
            kind="frame",
            target_kind="session",
            target_id=HOSTILE,
            payload="{}",
            created_ms=now_ms(),
            origin=runtime.token,
        )
        await runtime.dead_letters.add(hostile, "no_owner", Trail(), owner="")
        dlq = RuntimeKeys(redis_config.key_prefix).dlq()

        async def both_dead() -> bool:
            return int(await redis.xlen(dlq)) == 2

        await until(both_dead)


def cli_json(redis_config: RedisConfig, *argv: str) -> Any:
    env = clean_env(
        LINGUA_REDIS_URL=redis_config.url, LINGUA_REDIS__KEY_PREFIX=redis_config.key_prefix
    )
    done = run_cli(*argv, "--json", env=env)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def api_view(replica: Replica) -> ClusterView:
    status, body = replica.get("/api/v1/cluster")
    assert status == 200, body
    return msgspec.json.decode(body, type=ClusterView)


def parse_age(text: str) -> int:
    """The page's age text back in milliseconds (rounded down to its unit)."""
    m = re.fullmatch(r"(\d+)ms|(\d+)s|(\d+)m(\d\d)s|(\d+)h(\d\d)m", text)
    assert m, text
    ms, s, mm, ms_s, h, hm = m.groups()
    if ms:
        return int(ms)
    if s:
        return int(s) * 1000
    if mm:
        return (int(mm) * 60 + int(ms_s)) * 1000
    return (int(h) * 60 + int(hm)) * 60_000


# The values that do not tick by themselves (ages do): table -> (rows in the view, model paths).
STABLE: dict[str, tuple[str, list[str]]] = {
    "replicas": ("replicas", [f"replicas[].{k}" for k in (
        "instance_id", "epoch", "address", "live", "draining", "owned_nodes", "owned_sessions",
        "inbox_length", "inbox_pending")]),
    "nodes": ("nodes", [f"nodes[].{k}" for k in (
        "node_id", "live", "running", "max", "in_pools", "pair_count", "pair_examples", "owner")]),
    "jobs": ("jobs.rows", [f"jobs.rows[].{k}" for k in (
        "job_id", "session_id", "pair", "node_id", "attempt", "state")]),
    "dlq": ("dlq.entries", [f"dlq.entries[].{k}" for k in (
        "id", "message_id", "reason", "kind", "target", "deliveries", "last_error")]),
}  # fmt: skip
CARDS = ["nodes_total", "jobs.in_flight", "dlq.depth", "orphans"]


def as_shown(value: Any) -> str:
    """A model value as the page's show() writes it."""
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def at(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def expected(view: ClusterView) -> dict[str, Any]:
    """What the page must show for ``view``: rows keyed by id, cells by model path."""
    data = msgspec.to_builtins(view)
    out: dict[str, Any] = {}
    for table, (rows, paths) in STABLE.items():
        out[table] = {
            as_shown(row[paths[0].rsplit(".", 1)[1]]): {
                p: as_shown(row[p.rsplit(".", 1)[1]]) for p in paths
            }
            for row in at(data, rows)
        }
    out["pools"] = {f"pools.{k}": as_shown(v) for k, v in data["pools"].items()}
    out["cards"] = {c: as_shown(at(data, c)) for c in CARDS}
    return out


def shown(snap: dict[str, Any]) -> dict[str, Any]:
    """The same shape, from the page."""
    out: dict[str, Any] = {}
    for table, (_, paths) in STABLE.items():
        out[table] = {
            key: {p: cells[p] for p in paths if p in cells}
            for key, cells in snap["tables"][table].items()
        }
    out["pools"] = next(iter(snap["tables"]["pools"].values()), {})
    out["cards"] = {c: snap["cards"].get(c) for c in CARDS}
    return out


async def page_matches_api(
    page: Any, replica: Replica, within: float = 10.0
) -> tuple[dict[str, Any], ClusterView]:
    """Wait until the page shows what the API serves (the page refreshes every 500 ms)."""
    last: tuple[Any, Any] = (None, None)
    with anyio.move_on_after(within):
        while True:
            snap = await page.evaluate(SNAPSHOT_JS)
            view = await anyio.to_thread.run_sync(api_view, replica)
            if shown(snap) == expected(view) and not snap["err"]:
                return snap, view
            last = (shown(snap), expected(view))
            await anyio.sleep(0.2)
    raise AssertionError(f"the page never matched the API:\npage {last[0]}\napi  {last[1]}")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A headless Debian chromium driven by Playwright (checked before anything starts)."""
    path = require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_the_dashboard_shows_the_cluster_as_the_api_and_cli_do_and_replays(
    two_replicas: list[Replica],
    redis_config: RedisConfig,
    redis: AnyRedis,
    peers: Any,
) -> None:
    require_chromium()
    a, b = two_replicas
    await dead_letter(redis_config, redis)
    node = await peers(SimNode(a.ws + "/ws/node", (["de", "fr", "it"], ["fr", "de"]), NODE_ID))
    await node.register()
    browser = await peers(SimBrowser(b.ws + "/ws/session", "de", "fr"))
    await browser.init()
    await browser.chunk(opus_plan_a(10))
    await browser.final()
    job = await node.wait_type("job_assign")

    async with chromium() as chrome:
        page = await chrome.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(b.http + "/dashboard")
        snap, view = await page_matches_api(page, b)

        # The values themselves, as the scenario made them.
        replicas = snap["tables"]["replicas"]
        assert set(replicas) == {"dash-a", "dash-b"}
        assert replicas["dash-a"]["replicas[].owned_nodes"] == "1"
        assert replicas["dash-b"]["replicas[].owned_sessions"] == "1"
        assert all(r["replicas[].live"] == "true" for r in replicas.values())
        for row in replicas.values():
            assert parse_age(row["replicas[].presence_age_ms"]) < 5000, row
        [shown_node] = snap["tables"]["nodes"].values()
        assert shown_node["nodes[].node_id"] == NODE_ID and shown_node["nodes[].owner"] == "dash-a"
        assert shown_node["nodes[].live"] == "true" and shown_node["nodes[].running"] == "1"
        assert shown_node["nodes[].pair_count"] == "6"  # 3 ASR x 2 semantic, counted, not listed
        assert len(shown_node["nodes[].pair_examples"].split(", ")) == 3
        [shown_job] = snap["tables"]["jobs"].values()
        assert shown_job["jobs.rows[].job_id"] == job["job_id"]
        assert shown_job["jobs.rows[].session_id"] == browser.session_id
        assert (
            shown_job["jobs.rows[].pair"] == "de:fr" and shown_job["jobs.rows[].node_id"] == NODE_ID
        )
        assert snap["cards"]["dlq.depth"] == "2" and snap["cards"]["jobs.in_flight"] == "1"
        assert snap["reasons"] == "By reason: no_owner: 2"
        oldest = parse_age(snap["cards"]["dlq.oldest_age_ms"])
        assert view.dlq.oldest_age_ms is not None and oldest <= view.dlq.oldest_age_ms + 1000

        # The same values from the CLI an operator would run.
        ownership = cli_json(redis_config, "ownership")
        for r in ownership["replicas"]:
            row = replicas[r["instance_id"]]
            assert row["replicas[].epoch"] == str(r["epoch"])
            assert row["replicas[].owned_nodes"] == str(r["owned_nodes"])
            assert row["replicas[].owned_sessions"] == str(r["owned_sessions"])
        for inbox in cli_json(redis_config, "inbox"):
            if inbox["instance_id"] in replicas and inbox["state"] == "live":
                assert replicas[inbox["instance_id"]]["replicas[].inbox_pending"] == str(
                    inbox["pending"]
                )
        [cli_node] = cli_json(redis_config, "nodes")
        assert shown_node["nodes[].max"] == str(cli_node["max"])
        assert shown_node["nodes[].running"] == str(cli_node["running"])
        assert shown_node["nodes[].pair_count"] == str(len(cli_node["pairs"]))
        pool_entries = cli_json(redis_config, "pools")
        [pools] = snap["tables"]["pools"].values()
        assert pools["pools.members"] == str(len(pool_entries)) == "6"
        [cli_job] = cli_json(redis_config, "jobs", "--active")
        assert snap["tables"]["jobs"][cli_job["job_id"]]["jobs.rows[].attempt"] == str(
            cli_job["attempt"]
        )
        dead = cli_json(redis_config, "dlq", "list")
        assert {d["id"]: (d["message_id"], d["reason"], d["target"]) for d in dead} == {
            i: (r["dlq.entries[].message_id"], r["dlq.entries[].reason"], r["dlq.entries[].target"])
            for i, r in snap["tables"]["dlq"].items()
        }

        # The id that is markup is shown as text and never runs.
        [hostile] = [d for d in dead if d["target"] == f"session:{HOSTILE}"]
        assert snap["tables"]["dlq"][hostile["id"]]["dlq.entries[].target"] == f"session:{HOSTILE}"
        assert snap["images"] == 0 and snap["xss"] is None

        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTEFACTS / "dashboard.png"), full_page=True)

        # Without the token the page's action is refused and nothing changes.
        await page.click("#replay-all")
        await page.wait_for_function(
            "document.getElementById('action-result').textContent.includes('refused')"
        )
        assert (await anyio.to_thread.run_sync(api_view, b)).dlq.depth == 2

        # Purge the hostile one (selected), then replay the rest: the node gets its frame.
        await page.fill("#token", TOKEN)
        await page.evaluate(
            "id => [...document.querySelectorAll('#dlq input.pick')].find(b => b.value === id).click()",
            hostile["id"],
        )
        await page.click("#purge-selected")
        await page.wait_for_function(
            "document.querySelector('[data-field=\"dlq.depth\"] b').textContent === '1'"
        )
        await page.click("#replay-all")
        await page.wait_for_function(
            "document.querySelector('[data-field=\"dlq.depth\"] b').textContent === '0'"
        )
        result = await page.text_content("#action-result")
        assert result is not None and result.startswith("replay: 1 done, 0 skipped"), result
        probe = await node.wait_type("dashboard_probe")
        assert probe["replayed"] is True
        assert cli_json(redis_config, "dlq", "list") == []
        snap, _ = await page_matches_api(page, b)
        assert snap["cards"]["dlq.depth"] == "0" and snap["reasons"] == ""
        await page.screenshot(path=str(ARTEFACTS / "dashboard-after-replay.png"), full_page=True)

        # The page refreshes by itself: the browser leaves and dash-b's session count drops to 0.
        await browser.close()
        await page.wait_for_function(
            "[...document.querySelectorAll('#replicas tr')].some(r => r.dataset.key === 'dash-b'"
            " && r.querySelector('[data-field=\"replicas[].owned_sessions\"]').textContent === '0')"
        )
        await page_matches_api(page, b)
        assert errors == []


async def test_without_an_admin_token_the_page_disables_the_actions(
    redis_config: RedisConfig,
) -> None:
    require_chromium()
    replica = Replica(redis_config.url, "dash-plain", redis_config.key_prefix, dict(FAST_SETTINGS))
    replica.start()
    try:
        async with chromium() as chrome:
            page = await chrome.new_page()
            await page.goto(replica.http + "/dashboard")
            await page.wait_for_function(
                "document.querySelector('#replicas tr[data-key]') !== null"
            )
            for button in ("#replay-selected", "#purge-selected", "#replay-all", "#purge-all"):
                assert await page.is_disabled(button), button
            placeholder = await page.get_attribute("#token", "placeholder")
            assert "server.admin_token" in (placeholder or "")
    finally:
        replica.stop()


def test_the_screenshot_location_is_ignored_by_git() -> None:
    done = subprocess.run(
        ["git", "check-ignore", "-q", str(ARTEFACTS / "dashboard.png")], cwd=ROOT, check=False
    )
    assert done.returncode == 0
