"""The audit's pure decisions: what is a violation and what is the normal window before the
sweeper or the takeover acts."""

from __future__ import annotations

from scheduler.audit import (
    DeadlineFacts,
    JobFacts,
    Liveness,
    SlotFacts,
    deadline_violations,
    job_violations,
    owner_violation,
    slot_violations,
)

NOW = 1_000_000
GRACE = 15_000


def _live(until: int, *, lease: int = 0) -> Liveness:
    return Liveness({"r1": ("7", until)}, {"r1@7": lease} if lease else {})


def test_a_live_owner_or_one_lapsed_within_the_grace_is_fine() -> None:
    assert owner_violation("r1@7", _live(NOW + 1), NOW, GRACE) is None
    assert owner_violation("r1@7", _live(NOW - GRACE), NOW, GRACE) is None


def test_an_owner_lapsed_past_the_grace_is_a_violation_unless_a_takeover_runs() -> None:
    assert "lapsed 15001 ms ago" in str(owner_violation("r1@7", _live(NOW - GRACE - 1), NOW, GRACE))
    assert owner_violation("r1@7", _live(NOW - GRACE - 1, lease=NOW + 1), NOW, GRACE) is None
    assert owner_violation("r1@7", _live(NOW - GRACE - 1, lease=NOW), NOW, GRACE) is not None


def test_an_owner_of_a_replaced_or_gone_replica_is_a_violation() -> None:
    assert "restarted" in str(owner_violation("r1@6", _live(NOW + 1), NOW, GRACE))
    assert "no presence" in str(owner_violation("r2@1", _live(NOW + 1), NOW, GRACE))
    assert "malformed" in str(owner_violation("no-epoch", _live(NOW + 1), NOW, GRACE))


def _job(**changes: object) -> JobFacts:
    base = dict(node="n1", job="j1", known=True, alive_until=NOW + 1, state="running",
                job_node="n1", deadline=NOW + 1, record_deadline=NOW + 1)  # fmt: skip
    base.update(changes)
    return JobFacts(**base)  # type: ignore[arg-type]


def _checks(job: JobFacts) -> list[str]:
    return [v.check for v in job_violations([job], NOW, GRACE)]


def test_job_facts() -> None:
    assert _checks(_job()) == []
    assert _checks(_job(deadline=NOW - GRACE)) == []  # the sweeper's window
    assert _checks(_job(deadline=NOW - GRACE - 1)) == ["overdue_jobs"]
    assert _checks(_job(deadline=-1)) == ["overdue_jobs"]
    assert _checks(_job(alive_until=NOW - GRACE - 1)) == ["dead_node_jobs"]
    assert _checks(_job(known=False, deadline=NOW - GRACE - 1)) == [
        "dead_node_jobs",
        "overdue_jobs",
    ]
    # held for its node that went offline: fine without a node record, until past its deadline
    assert _checks(_job(known=False, alive_until=-1, held=True)) == []
    assert _checks(_job(known=False, held=True, deadline=NOW - GRACE - 1)) == ["overdue_jobs"]
    assert _checks(_job(state="completed")) == ["job_index"]
    assert _checks(_job(state="")) == ["job_index"]
    assert _checks(_job(job_node="n2")) == ["job_index"]


def test_slot_facts() -> None:
    def checks(**changes: object) -> list[str]:
        base = dict(node="n1", known=True, running=1, slots=2, jobs=1, free=True)
        base.update(changes)
        return [v.reason for v in slot_violations([SlotFacts(**base)])]  # type: ignore[arg-type]

    assert checks() == []
    assert checks(running=2, jobs=2, free=False) == []
    assert checks(jobs=0) == ["1 slots reserved but 0 active jobs on the node"]
    assert checks(running=2, jobs=2) == ["in node_free with 2 of 2 slots running"]
    assert checks(free=False) == ["missing from node_free with 1 of 2 slots running"]
    assert checks(known=False) == ["slots are counted for a node that is not registered"]
    assert checks(known=False, running=0, jobs=0, slots=-1, free=False) == []
    # a gone node's count for jobs held for its return: fine, but never in node_free
    gone = dict(known=False, running=2, jobs=2, slots=-1, free=False)
    assert checks(**gone, held=2) == []
    assert checks(**gone, held=1) == ["slots are counted for a node that is not registered"]
    assert checks(**{**gone, "free": True}, held=2) == ["in node_free with 2 of -1 slots running"]
    assert checks(**{**gone, "running": 1}, held=2) == [
        "1 slots reserved but 2 active jobs on the node"
    ]


def test_deadline_facts() -> None:
    def reasons(state: str, indexed: bool) -> list[str]:
        facts = DeadlineFacts(job="j1", state=state, node="n1" if state else "", indexed=indexed)
        return [v.reason for v in deadline_violations([facts])]

    assert reasons("running", True) == []
    assert reasons("acked", False) == [
        "the job is active but not in node_jobs: it holds no slot of its node"
    ]
    assert reasons("completed", False) == ["it has a deadline entry but the job is completed"]
    assert reasons("", False) == ["it has a deadline entry but its job record is gone"]
