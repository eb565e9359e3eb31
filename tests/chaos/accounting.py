"""The accounting of one chaos run: what became of every utterance the clients cut.

Pure: observations in (what the simulated clients sent and received, what the simulated nodes
were asked to do, the slot counts read from Redis), one :class:`Accounting` out. Times are the
test process's monotonic clock in seconds.

Chunk by chunk (see :mod:`tests.chaos.markers`): a chunk is *answered* by each
``translation_result`` whose text echoes its marker. A cut the client finished is

* **completed** when every chunk of it is answered (its latency: from the client's ``is_final``
  to the last of those results);
* **errored** when the chunks not answered belong to an utterance the client got an explicit
  ``ui_event ERROR`` for (known from the job's audio when a node saw the job, else bounded by the
  neighbouring answered chunks: utterance indices only grow with the audio);
* **severed** when its session's socket died without a close frame (1006: the replica was
  killed) before it was answered: the client saw the connection drop, nothing could tell it more;
* **lost** otherwise: no result, no error, and the server could have said so.

A cut is **duplicated** when one of its chunks is in two results, **merged** when an utterance
holds chunks of another cut too, **split** when its chunks went to two utterances. A cut the
client could not finish because its socket closed mid-cut is **interrupted** and not counted:
the user never finished it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = [
    "Accounting",
    "CutOutcome",
    "CutSent",
    "ErrorSeen",
    "JobSeen",
    "Observations",
    "ResultSeen",
    "SocketClosed",
    "account",
]

ABNORMAL_CLOSE = 1006  # no close frame: the peer (a killed replica) is gone
UtteranceKey = tuple[str, int]  # (session_id, utterance_index)


@dataclass
class CutSent:
    client: int
    number: int
    session_id: str
    chunks: list[str]
    finished_at: float  # when the client sent is_final (meaningless when interrupted)
    interrupted: bool = False


@dataclass
class ResultSeen:
    session_id: str
    utterance_index: int
    job_id: str
    chunks: list[str]
    at: float


@dataclass
class ErrorSeen:
    session_id: str
    utterance_index: int
    job_id: str
    code: str
    at: float


@dataclass
class JobSeen:
    """A ``job_assign`` a node received: the chunks of that utterance, from its audio."""

    session_id: str
    utterance_index: int
    chunks: list[str]
    job_id: str = ""
    attempt: int = 0
    node_id: str = ""
    at: float = 0.0


@dataclass
class SocketClosed:
    session_id: str
    code: int | None
    at: float


@dataclass
class Observations:
    cuts: list[CutSent]
    results: list[ResultSeen]
    errors: list[ErrorSeen]
    jobs: list[JobSeen]
    closes: list[SocketClosed]
    running_slots: dict[str, int]  # node -> running count in Redis, after the settle
    fault_at: float | None = None


@dataclass
class CutOutcome:
    client: int
    number: int
    session_id: str
    status: str  # completed | errored | severed | lost
    latency_s: float | None  # completed / errored: from is_final to the answer
    resolved_at: float | None
    duplicated: bool = False
    merged: bool = False
    split: bool = False
    error_codes: list[str] = field(default_factory=list)


@dataclass
class Accounting:
    cut: int
    completed: int
    errored: int
    severed: int
    lost: int
    duplicated: int
    merged: int
    split: int
    interrupted: int
    leaked_slots: int
    worst_latency_s: float
    p50_latency_s: float
    recovery_s: float | None
    error_codes: dict[str, int]
    lost_cuts: list[str]
    slow_cuts: list[str]
    outcomes: list[CutOutcome] = field(repr=False, default_factory=list)

    def promise_broken(self, latency_limit_s: float) -> list[str]:
        """Each broken part of the promise, as a sentence; empty when it holds."""
        broken = []
        if self.lost:
            broken.append(f"{self.lost} utterance(s) lost (no result, no error): {self.lost_cuts}")
        if self.duplicated:
            broken.append(f"{self.duplicated} utterance(s) answered twice")
        if self.merged or self.split:
            broken.append(
                f"cuts moved: {self.merged} merged with a neighbour, {self.split} split "
                "(the client's cuts must stay where it put them)"
            )
        if self.leaked_slots:
            broken.append(f"{self.leaked_slots} slot(s) still reserved after the settle")
        if self.worst_latency_s > latency_limit_s:
            broken.append(
                f"worst utterance latency {self.worst_latency_s:.1f} s > {latency_limit_s:.0f} s: "
                f"{self.slow_cuts}"
            )
        return broken


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def account(obs: Observations, *, normal_latency_s: float = 3.0) -> Accounting:
    """Account every cut in ``obs``. ``normal_latency_s``: a slower answer counts as affected by
    the fault when the recovery time is measured."""
    answered: dict[str, list[ResultSeen]] = defaultdict(list)
    utterances_of: dict[str, set[UtteranceKey]] = defaultdict(set)
    chunks_of: dict[UtteranceKey, set[str]] = defaultdict(set)
    for result in obs.results:
        key = (result.session_id, result.utterance_index)
        for chunk in result.chunks:
            answered[chunk].append(result)
            utterances_of[chunk].add(key)
            chunks_of[key].add(chunk)
    for job in obs.jobs:
        key = (job.session_id, job.utterance_index)
        for chunk in job.chunks:
            utterances_of[chunk].add(key)
            chunks_of[key].add(chunk)
    errors: dict[UtteranceKey, list[ErrorSeen]] = defaultdict(list)
    for error in obs.errors:
        errors[(error.session_id, error.utterance_index)].append(error)
    closed = {c.session_id: c for c in obs.closes}
    cut_of: dict[str, tuple[int, int]] = {}
    order: dict[str, list[str]] = defaultdict(list)  # session -> its chunks in sending order
    for cut in obs.cuts:
        for chunk in cut.chunks:
            cut_of[chunk] = (cut.client, cut.number)
            order[cut.session_id].append(chunk)
    position = {chunk: i for chunks in order.values() for i, chunk in enumerate(chunks)}

    def error_for(chunk: str, session_id: str) -> ErrorSeen | None:
        """The explicit error that covers ``chunk``, if any."""
        known = utterances_of.get(chunk)
        if known:
            return next((errors[k][0] for k in known if errors.get(k)), None)
        # No node saw its utterance (e.g. NO_AVAILABLE_NODE at dispatch): bound its index by the
        # nearest chunks whose utterance is known; indices grow with the audio.
        sent = order[session_id]
        p = position[chunk]
        lo = max(
            (i for c in sent[:p] for s, i in utterances_of.get(c, ()) if s == session_id),
            default=-1,
        )
        hi = min(
            (i for c in sent[p + 1 :] for s, i in utterances_of.get(c, ()) if s == session_id),
            default=math.inf,
        )
        for (s, i), seen in errors.items():
            # An utterance whose audio is known (a result, a node's job) is not this chunk's.
            if s == session_id and lo <= i <= hi and (s, i) not in chunks_of and seen:
                return seen[0]
        return None

    outcomes: list[CutOutcome] = []
    interrupted = 0
    for cut in obs.cuts:
        if cut.interrupted or not cut.chunks:
            interrupted += cut.interrupted
            continue
        answers: list[float] = []
        errored: list[ErrorSeen] = []
        missing = False
        duplicated = False
        for chunk in cut.chunks:
            got = answered.get(chunk, [])
            if len(got) > 1:
                duplicated = True
            if got:
                answers.append(min(r.at for r in got))
                continue
            error = error_for(chunk, cut.session_id)
            if error is not None:
                errored.append(error)
                answers.append(error.at)
            else:
                missing = True
        keys = set().union(*(utterances_of.get(c, set()) for c in cut.chunks))
        mine = set(cut.chunks)
        merged = any(chunks_of[k] - mine for k in keys)
        split = len(keys) > 1
        if missing:
            close = closed.get(cut.session_id)
            severed = close is not None and close.code == ABNORMAL_CLOSE
            status = "severed" if severed else "lost"
            latency = resolved = None
        else:
            status = "errored" if errored else "completed"
            resolved = max(answers)
            latency = max(0.0, resolved - cut.finished_at)
        outcomes.append(
            CutOutcome(
                client=cut.client,
                number=cut.number,
                session_id=cut.session_id,
                status=status,
                latency_s=latency,
                resolved_at=resolved,
                duplicated=duplicated,
                merged=merged,
                split=split,
                error_codes=sorted({e.code for e in errored}),
            )
        )

    latencies = [o.latency_s for o in outcomes if o.latency_s is not None]
    worst = max(latencies, default=0.0)
    recovery = _recovery(obs, outcomes, normal_latency_s)
    codes: dict[str, int] = defaultdict(int)
    for o in outcomes:
        for code in o.error_codes:
            codes[code] += 1

    def name(o: CutOutcome) -> str:
        return f"client {o.client} cut {o.number} ({o.session_id})"

    return Accounting(
        cut=len(outcomes),
        completed=sum(o.status == "completed" for o in outcomes),
        errored=sum(o.status == "errored" for o in outcomes),
        severed=sum(o.status == "severed" for o in outcomes),
        lost=sum(o.status == "lost" for o in outcomes),
        duplicated=sum(o.duplicated for o in outcomes),
        merged=sum(o.merged for o in outcomes),
        split=sum(o.split for o in outcomes),
        interrupted=interrupted,
        leaked_slots=sum(max(0, n) for n in obs.running_slots.values()),
        worst_latency_s=round(worst, 3),
        p50_latency_s=round(_quantile(latencies, 0.5), 3),
        recovery_s=None if recovery is None else round(recovery, 3),
        error_codes=dict(codes),
        lost_cuts=[name(o) for o in outcomes if o.status == "lost"][:10],
        slow_cuts=[
            f"{name(o)}: {o.latency_s:.1f} s"
            for o in sorted(outcomes, key=lambda o: -(o.latency_s or 0))[:5]
            if (o.latency_s or 0) > normal_latency_s
        ],
        outcomes=outcomes,
    )


def _recovery(
    obs: Observations, outcomes: list[CutOutcome], normal_latency_s: float
) -> float | None:
    """Seconds from the fault until the last cut it affected (not answered normally) ended:
    answered, or, unanswered, cut. None without a fault; 0 when nothing was affected."""
    if obs.fault_at is None:
        return None
    finished = {(c.client, c.number): c.finished_at for c in obs.cuts}
    end = obs.fault_at
    for o in outcomes:
        normal = (
            o.status == "completed"
            and not o.duplicated
            and (o.latency_s or 0.0) <= normal_latency_s
        )
        if normal:
            continue
        at = o.resolved_at if o.resolved_at is not None else finished[(o.client, o.number)]
        end = max(end, at)
    return end - obs.fault_at
