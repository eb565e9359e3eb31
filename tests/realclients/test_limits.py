"""The recorded real clients never meet a limit (docs/security.md, "Limits"), even with every
message rate at a quarter of its default: the browser's manual cuts and its burst of tiny cuts,
and the Electron node answering them, on one ``serve`` replica."""

from __future__ import annotations

import re

import anyio
import pytest

from scheduler.config import LimitsConfig
from scheduler.limits import LIMITS
from tests.realclients.conftest import Clients, StartReplicas
from tests.realclients.peers import RealBrowser, eventually

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

DEFAULTS = LimitsConfig()
QUARTER = {
    f"limits.{key}": max(1, getattr(DEFAULTS, key) // 4)
    for key in (
        "session_messages_per_second",
        "session_message_burst",
        "node_messages_per_second",
        "node_message_burst",
    )
}
# browser_silence_burst.json: speech resumes, then the burst of tiny cuts (ends at 12396 ms).
BURST_FROM_MS, BURST_TO_MS = 5642, 12400
BREACH = re.compile(r'^lingua_limit_breaches_total\{limit="(\w+)"\} (\S+)$', re.M)


async def test_the_recorded_clients_meet_no_limit_at_a_quarter_of_the_default_rates(
    replicas: StartReplicas, clients: Clients
) -> None:
    (replica,) = await replicas(1, QUARTER)
    node = clients.node(replica, job_seconds=0.3)
    await node.register()
    cuts = await clients.browser(replica)
    burst = await clients.browser(replica, "browser_silence_burst.json")
    async with anyio.create_task_group() as tg:
        tg.start_soon(cuts.replay)
        tg.start_soon(burst.replay, BURST_FROM_MS, BURST_TO_MS)

    def answered(browser: RealBrowser, at_least: int) -> bool:
        dispatched = {m["utterance_index"] for m in browser.of_type("ui_event", event="DISPATCHED")}
        done = {m["utterance_index"] for m in browser.of_type("translation_result")}
        return len(dispatched) >= at_least and dispatched <= done

    # Every cut of the manual-cut timeline, and every dispatched cut of the burst, answered.
    assert await eventually(lambda: answered(cuts, cuts.utterances_cut()), within=10)
    assert await eventually(lambda: answered(burst, 5), within=10), burst.received
    status, body = await anyio.to_thread.run_sync(replica.get, "/metrics")
    assert status == 200
    counted = dict(BREACH.findall(body.decode()))
    assert set(counted) == set(LIMITS)
    assert {limit: float(value) for limit, value in counted.items()} == dict.fromkeys(LIMITS, 0.0)
    for browser in (cuts, burst):
        assert not [m for m in browser.of_type("error") if m["code"] == "RATE_LIMITED"]
    assert node.connected
