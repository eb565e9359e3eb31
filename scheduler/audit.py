"""The audit: reconcile the live Redis state against the invariants the scripts keep.

Checks (``CHECKS``; docs/operations.md "Audit" defines each for operators):

- ``slots``: a node's ``node_running`` differs from its members in ``node_jobs``, a count is
  kept for a node that is not registered (other than for jobs held for its return), or
  ``node_free`` disagrees with running < slots.
- ``job_index``: a ``node_jobs`` member whose job record is missing, finished or on another
  node (a slot held by nothing); a ``deadlines`` entry of a job whose record is missing or
  finished, or an active job missing from ``node_jobs`` (a job holding no slot).
- ``dead_node_jobs``: an active job on a node that is not registered, or whose liveness lapsed
  more than ``audit.grace_ms`` ago (the sweeper takes such nodes offline within its interval).
  A job *held* for its node (``held_since`` in its record: the node went offline and no other
  node could take it, lua/includes/away.lua) is legitimate on a node with no record; like any
  active job it is ``overdue_jobs`` once ``audit.grace_ms`` past its deadline.
- ``overdue_jobs``: an active job more than ``audit.grace_ms`` past its deadline, or with no
  deadline entry at all (it would never time out).
- ``dead_owners``: a ``node_owner`` / ``session_owner`` entry naming a token that is not live,
  with no takeover lease running and its presence lapsed more than ``audit.grace_ms`` ago (or
  gone, or replaced by a newer start).
- ``stuck_inbox``: an inbox entry older than ``audit.inbox_stuck_ms``.
- ``dlq``: every dead letter (an operator must look at each), with the oldest one's age.

Reads are bounded: every walk goes in pages of ``audit.page_size`` (HSCAN / ZRANGEBYLEX / XRANGE
with COUNT), never one unbounded read of a domain-wide hash. The per-node slot facts and the
per-job facts come from one read-only script call per page (``lua/audit/``), so a job finishing
during the audit never looks like a violation; owner entries are read again before they are
reported. The decisions (:func:`slot_violations`, :func:`job_violations`,
:func:`owner_violation`) are pure.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol

import anyio
import msgspec

from cross_instance.keys import RuntimeKeys, split_token
from cross_instance.lua import ScriptLibrary
from cross_instance.presence import server_ms
from cross_instance.redis_client import AnyRedis
from scheduler.config import AuditConfig, Config
from scheduler.scheduling.keys import SchedulingKeys

__all__ = [
    "CHECKS",
    "AuditReport",
    "AuditSink",
    "Auditor",
    "CheckResult",
    "DeadlineFacts",
    "JobFacts",
    "Liveness",
    "SlotFacts",
    "Violation",
    "audit_forever",
    "deadline_violations",
    "job_violations",
    "owner_violation",
    "slot_violations",
]

log = logging.getLogger("lingua.audit")

CHECKS: tuple[str, ...] = (
    "slots",
    "job_index",
    "dead_node_jobs",
    "overdue_jobs",
    "dead_owners",
    "stuck_inbox",
    "dlq",
)
_ACTIVE = ("dispatched", "acked", "running")


class Violation(msgspec.Struct, frozen=True):
    check: str
    subject: str  # what is wrong, e.g. "node n1", "job j1 on n1", "session s1"
    reason: str  # a sentence for the operator
    facts: dict[str, Any] = {}


class CheckResult(msgspec.Struct):
    ok: bool = True
    count: int = 0
    examples: list[Violation] = []


class AuditReport(msgspec.Struct):
    now_ms: int
    checks: dict[str, CheckResult]
    dlq_depth: int = 0
    dlq_oldest_age_ms: int = 0
    # (check, subject) already counted: HSCAN / ZSCAN may return an entry twice.
    seen: set[tuple[str, str]] = set()

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.checks.values())

    def add(self, violation: Violation, cap: int) -> None:
        if (violation.check, violation.subject) in self.seen:
            return
        self.seen.add((violation.check, violation.subject))
        result = self.checks[violation.check]
        result.ok = False
        result.count += 1
        if len(result.examples) < cap:
            result.examples.append(violation)

    def to_builtins(self) -> dict[str, Any]:
        """The ``--json`` document (docs/operations.md "Audit" describes it)."""
        return {
            "ok": self.ok,
            "now_ms": self.now_ms,
            "checks": {
                name: {
                    "ok": r.ok,
                    "count": r.count,
                    "examples": [
                        {"subject": v.subject, "reason": v.reason, **v.facts} for v in r.examples
                    ],
                }
                for name, r in self.checks.items()
            },
            "dlq": {"depth": self.dlq_depth, "oldest_age_ms": self.dlq_oldest_age_ms},
        }


# -- facts as the audit scripts return them ---------------------------------------------------


class SlotFacts(msgspec.Struct, frozen=True):
    node: str
    known: bool
    running: int  # -1: no node_running field
    slots: int  # -1: not in the pools
    jobs: int  # node_jobs members of the node
    free: bool
    held: int = 0  # a node with no record: its active jobs held for its return


class JobFacts(msgspec.Struct, frozen=True):
    node: str
    job: str
    known: bool
    alive_until: int  # -1: no node_alive entry
    state: str  # "": no job record
    job_node: str
    deadline: int  # -1: not in deadlines
    record_deadline: int
    held: bool = False  # held for its node, which went offline (held_since in the record)


class DeadlineFacts(msgspec.Struct, frozen=True):
    job: str
    state: str  # "": no job record
    node: str
    indexed: bool  # "<node>\0<job>" is in node_jobs


class _JobPage(msgspec.Struct):
    now: int
    last: str
    jobs: list[JobFacts] = []


class Liveness(msgspec.Struct, frozen=True):
    """The replicas as presence shows them at ``now``: instance -> (epoch, alive until), and
    the takeover leases (dead token -> lease until)."""

    presence: dict[str, tuple[str, int]]
    leases: dict[str, int]


# -- decisions (pure) -------------------------------------------------------------------------


def slot_violations(facts: Sequence[SlotFacts]) -> Iterator[Violation]:
    for f in facts:
        subject = f"node {f.node}"
        data = {"node": f.node, "running": f.running, "active_jobs": f.jobs, "slots": f.slots}
        # a gone node's count is legitimate while every job it counts is held for its return
        # (then running == jobs == held; the checks below still see a mismatch or node_free)
        if not f.known and (f.running > 0 or f.jobs > 0) and f.held != f.jobs:
            yield Violation(
                "slots",
                subject,
                "slots are counted for a node that is not registered",
                {**data, "held": f.held},
            )
        elif f.running >= 0 and f.running != f.jobs:
            yield Violation(
                "slots",
                subject,
                f"{f.running} slots reserved but {f.jobs} active jobs on the node",
                data,
            )
        elif f.free != (f.slots >= 0 and 0 <= f.running < f.slots):
            state = "in" if f.free else "missing from"
            yield Violation(
                "slots",
                subject,
                f"{state} node_free with {f.running} of {f.slots} slots running",
                {**data, "free": f.free},
            )


def job_violations(jobs: Sequence[JobFacts], now: int, grace_ms: int) -> Iterator[Violation]:
    for f in jobs:
        subject = f"job {f.job} on {f.node}"
        data: dict[str, Any] = {"job": f.job, "node": f.node}
        if f.state not in _ACTIVE or f.job_node != f.node:
            if not f.state:
                why = "its job record is gone"
            elif f.state not in _ACTIVE:
                why = f"the job is {f.state}"
            else:
                why = f"the job is on {f.job_node}"
            yield Violation(
                "job_index", subject, f"node_jobs holds a slot for it but {why}",
                {**data, "state": f.state, "job_node": f.job_node},
            )  # fmt: skip
            continue
        if not f.known:
            if not f.held:  # a held job waits for its node's return, until its deadline
                yield Violation("dead_node_jobs", subject, "its node is not registered", data)
        elif f.alive_until < 0:
            yield Violation("dead_node_jobs", subject, "its node has no liveness entry", data)
        elif f.alive_until + grace_ms < now:
            yield Violation(
                "dead_node_jobs", subject,
                f"its node's liveness lapsed {now - f.alive_until} ms ago",
                {**data, "alive_until_ms": f.alive_until},
            )  # fmt: skip
        if f.deadline < 0:
            yield Violation(
                "overdue_jobs", subject, "it has no deadline entry: it would never time out",
                {**data, "deadline_ms": f.record_deadline},
            )  # fmt: skip
        elif f.deadline + grace_ms < now:
            yield Violation(
                "overdue_jobs", subject, f"its deadline passed {now - f.deadline} ms ago",
                {**data, "deadline_ms": f.deadline},
            )  # fmt: skip


def deadline_violations(facts: Sequence[DeadlineFacts]) -> Iterator[Violation]:
    for f in facts:
        data = {"job": f.job, "node": f.node, "state": f.state}
        if f.state == "waiting":
            continue  # waits for a slot (lua/includes/waiting.lua): no node, no slot, by design
        if f.state not in _ACTIVE:
            why = "its job record is gone" if not f.state else f"the job is {f.state}"
            yield Violation("job_index", f"job {f.job}", f"it has a deadline entry but {why}", data)
        elif not f.indexed:
            yield Violation(
                "job_index", f"job {f.job} on {f.node}",
                "the job is active but not in node_jobs: it holds no slot of its node", data,
            )  # fmt: skip


def owner_violation(token: str, live: Liveness, now: int, grace_ms: int) -> str | None:
    """Why an owner entry naming ``token`` is a violation, or None while it is fine: its token
    is live, a takeover lease runs, or its presence lapsed no more than ``grace_ms`` ago."""
    try:
        instance, epoch = split_token(token)
    except ValueError:
        return "the owner token is malformed"
    if live.leases.get(token, 0) > now:
        return None  # being taken over
    current = live.presence.get(instance)
    if current is None:
        return "its replica has no presence (it left or was taken over)"
    current_epoch, until = current
    if current_epoch != epoch:
        return f"its replica restarted (epoch {current_epoch}) and nobody took the old one over"
    if until > now:
        return None
    if until + grace_ms < now:
        return f"its replica's presence lapsed {now - until} ms ago and nobody took it over"
    return None


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


# -- reads ------------------------------------------------------------------------------------


class Auditor:
    """Runs every check against one deployment's Redis; safe to reuse across runs."""

    def __init__(self, redis: AnyRedis, config: Config) -> None:
        # Any: redis-py's reply unions (sync/async, bytes/str) do not narrow; replies are strs.
        self.redis: Any = redis
        self.config: AuditConfig = config.audit
        self.keys = SchedulingKeys(config.redis.key_prefix, config.scheduling.domain)
        self.rt = RuntimeKeys(config.redis.key_prefix)
        self.library = ScriptLibrary("audit")
        self._script_keys = {
            name: self.keys.for_script(script) for name, script in self.library.scripts.items()
        }

    async def _script(self, name: str, args: Sequence[Any]) -> bytes:
        reply = await self.library.call(self.redis, name, self._script_keys[name], args)
        body = reply[1] if len(reply) > 1 else "[]"
        return body.encode() if isinstance(body, str) else body

    async def run(self) -> AuditReport:
        now = await server_ms(self.redis)
        report = AuditReport(now_ms=now, checks={name: CheckResult() for name in CHECKS})
        cap = self.config.examples
        walks = (
            self._slots(),
            self._jobs(now),
            self._deadlines(),
            self._owners(now),
            self._inboxes(now),
        )
        for walk in walks:
            async for violation in walk:
                report.add(violation, cap)
        await self._dlq(report, now)
        return report

    async def _slots(self) -> AsyncIterator[Violation]:
        page = self.config.page_size
        cursor = 0
        while True:
            cursor, fields = await self.redis.hscan(
                self.keys.key("node_running"), cursor, count=page
            )
            nodes = sorted(_text(f) for f in fields)
            for i in range(0, len(nodes), page):
                body = await self._script("audit_slots", nodes[i : i + page])
                for v in slot_violations(msgspec.json.decode(body, type=list[SlotFacts])):
                    yield v
            if cursor == 0:
                return

    async def _jobs(self, now: int) -> AsyncIterator[Violation]:
        start = "-"
        while True:
            body = await self._script("audit_jobs", [start, self.config.page_size, str(now)])
            page = msgspec.json.decode(body, type=_JobPage)
            for v in job_violations(page.jobs, page.now, self.config.grace_ms):
                yield v
            if not page.last:
                return
            start = "(" + page.last

    async def _deadlines(self) -> AsyncIterator[Violation]:
        cursor = 0
        while True:
            cursor, members = await self.redis.zscan(
                self.keys.key("deadlines"), cursor, count=self.config.page_size
            )
            jobs = sorted(_text(member) for member, _ in members)
            if jobs:
                body = await self._script("audit_deadlines", jobs)
                for v in deadline_violations(msgspec.json.decode(body, type=list[DeadlineFacts])):
                    yield v
            if cursor == 0:
                return

    async def _liveness(self) -> Liveness:
        presence = {}
        alive = dict(await self.redis.zrange(self.rt.rt("alive"), 0, -1, withscores=True))
        for instance, raw in (await self.redis.hgetall(self.rt.rt("presence"))).items():
            name = _text(instance)
            epoch = str(msgspec.json.decode(raw).get("epoch", ""))
            presence[name] = (epoch, int(alive.get(instance, 0)))
        leases = {}
        for token, raw in (await self.redis.hgetall(self.rt.rt("takeovers"))).items():
            leases[_text(token)] = int(msgspec.json.decode(raw).get("until_ms", 0))
        return Liveness(presence, leases)

    async def _owners(self, now: int) -> AsyncIterator[Violation]:
        # presence, alive and takeovers hold one entry per replica start: small, read whole.
        live = await self._liveness()
        grace = self.config.grace_ms
        for kind in ("node", "session"):
            key = self.rt.owners(kind)
            cursor = 0
            while True:
                cursor, entries = await self.redis.hscan(key, cursor, count=self.config.page_size)
                suspects = {
                    _text(ident): (_text(token), why)
                    for ident, token in entries.items()
                    if (why := owner_violation(_text(token), live, now, grace)) is not None
                }
                if suspects:
                    # Read again: a release or a takeover may have moved the entry meanwhile.
                    ids = sorted(suspects)
                    again = await self.redis.hmget(key, ids)
                    for ident, token in zip(ids, again, strict=True):
                        owner, why = suspects[ident]
                        if token is not None and _text(token) == owner:
                            yield Violation(
                                "dead_owners", f"{kind} {ident}", f"owned by {owner}: {why}",
                                {"kind": kind, "id": ident, "owner": owner},
                            )  # fmt: skip
                if cursor == 0:
                    break

    async def _inboxes(self, now: int) -> AsyncIterator[Violation]:
        before = now - self.config.inbox_stuck_ms
        if before <= 0:
            return
        # One registry entry per replica start: small, read whole.
        for token in sorted(_text(t) for t in await self.redis.hgetall(self.rt.rt("inboxes"))):
            try:
                stream = self.rt.inbox(token)
            except ValueError:
                continue
            start = "-"
            while True:
                entries = await self.redis.xrange(
                    stream, start, str(before), count=self.config.page_size
                )
                for entry_id, _ in entries:
                    ident = _text(entry_id)
                    yield Violation(
                        "stuck_inbox", f"inbox {token} entry {ident}",
                        f"unacknowledged for {now - _entry_ms(ident)} ms",
                        {"inbox": token, "entry_id": ident, "age_ms": now - _entry_ms(ident)},
                    )  # fmt: skip
                if len(entries) < self.config.page_size:
                    break
                start = "(" + _text(entries[-1][0])

    async def _dlq(self, report: AuditReport, now: int) -> None:
        stream = self.rt.dlq()
        report.dlq_depth = int(await self.redis.xlen(stream))
        if not report.dlq_depth:
            return
        result = report.checks["dlq"]
        result.ok = False
        result.count = report.dlq_depth
        for entry_id, fields in await self.redis.xrange(stream, count=self.config.examples):
            ident = _text(entry_id)
            age = max(0, now - _entry_ms(ident))
            report.dlq_oldest_age_ms = max(report.dlq_oldest_age_ms, age)
            dead = _dead_summary(fields)
            result.examples.append(
                Violation(
                    "dlq", f"dead letter {ident}",
                    f"{dead.get('reason', '?')} for {dead.get('target', '?')}, {age} ms ago",
                    {"entry_id": ident, "age_ms": age, **dead},
                )
            )  # fmt: skip


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dead_summary(fields: dict[Any, Any]) -> dict[str, str]:
    raw = next((v for k, v in fields.items() if _text(k) == "dead"), None)
    try:
        dead = msgspec.json.decode(raw) if raw is not None else {}
        env = dead.get("envelope", {})
        return {
            "reason": str(dead.get("reason", "")),
            "message_id": str(env.get("message_id", "")),
            "target": f"{env.get('target_kind', '')}:{env.get('target_id', '')}",
        }
    except (msgspec.DecodeError, AttributeError):
        return {"reason": "unreadable"}


# -- the periodic run -------------------------------------------------------------------------


class AuditSink(Protocol):
    """Where the periodic audit reports (``scheduler.metrics.AuditMetrics``)."""

    def record(self, report: AuditReport) -> None: ...

    def failed(self) -> None: ...


async def audit_forever(auditor: Auditor, sink: AuditSink, interval_ms: int) -> None:
    """Audit every ``interval_ms``. Every replica runs it: each one's gauges stay current (the
    alert takes the max over replicas), and a run costs a few paged reads per interval."""
    while True:
        await anyio.sleep(interval_ms / 1000)
        try:
            report = await auditor.run()
        except Exception:
            sink.failed()
            log.warning("audit failed (Redis unreachable or slow?)", exc_info=True)
            continue
        sink.record(report)
        if not report.ok:
            found = {n: r.count for n, r in report.checks.items() if not r.ok}
            log.warning("audit found violations: %s", found, extra={"violations": found})
