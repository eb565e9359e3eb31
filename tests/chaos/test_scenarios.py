"""The chaos scenarios (issue 12): one fault each, in the middle of traffic, and the promise.

The promise, per scenario: no utterance lost (each cut ends in a result or an explicit error),
none answered twice, every cut answered as the client cut it (none merged or split), no slot
leaked, `lingua-scheduler audit --json` clean after the settle, worst utterance latency <= 10 s with
the default job timeout. ``test_the_suite_catches_a_broken_build`` shows the accounting (and the
audit) failing when it must.
Numbers: ``var/chaos/<scenario>.json``; the table: ``python -m tests.chaos.report``.
"""

from __future__ import annotations

import json

import pytest

from tests.chaos import scenarios
from tests.chaos.scenarios import SCENARIOS, Scenario

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(300)]


def _explain(summary: dict[str, object]) -> str:
    keep = (
        "cut completed errored severed lost duplicated merged split interrupted leaked_slots "
        "worst_latency_s recovery_s error_codes fault_notes node_close_codes "
        "session_close_codes node_discarded_results metrics log_digest audit"
    ).split()
    return json.dumps({k: summary.get(k) for k in keep}, indent=1)


@pytest.mark.parametrize("name", [n for n in SCENARIOS])
async def test_the_promise_holds_under(name: str) -> None:
    summary = await scenarios.run(SCENARIOS[name])
    assert summary["cut"] > 50, _explain(summary)  # the traffic was real
    assert not summary["broken"], "\n".join(summary["broken"]) + "\n" + _explain(summary)


async def test_the_suite_catches_a_broken_build() -> None:
    """The same accounting on a build that drops one result and leaks one slot, silently."""
    control = Scenario("broken_build", "none (broken build)", "", None, warmup_s=4.0, after_s=8.0)
    summary = await scenarios.run(
        control,
        module="tests.chaos.broken",
        extra_env={"CHAOS_BREAK": "drop_result,leak_slot"},
    )
    assert summary["lost"] == 1, _explain(summary)
    assert summary["leaked_slots"] == 1, _explain(summary)
    assert not summary["audit_clean"], summary["audit"]  # the leaked slot: `audit` says so too
    assert summary["duplicated"] == 0, _explain(summary)
    assert summary["completed"] == summary["cut"] - 1, _explain(summary)
    assert not summary["promise_holds"]
