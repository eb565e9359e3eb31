"""The accounting itself, on hand-made observations: merges, splits, errors, losses, leaks."""

from __future__ import annotations

from tests.chaos.accounting import (
    CutSent,
    ErrorSeen,
    JobSeen,
    Observations,
    ResultSeen,
    SocketClosed,
    account,
)
from tests.chaos.markers import chunk_audio, chunk_marker, markers_in

S = "s-1"


def cut(number: int, chunks: list[str], at: float = 0.0, session: str = S) -> CutSent:
    return CutSent(0, number, session, chunks, at)


def result(index: int, chunks: list[str], at: float = 1.0, session: str = S) -> ResultSeen:
    return ResultSeen(session, index, f"job-{index}-{at}", chunks, at)


def observe(cuts: list[CutSent], **kw: object) -> Observations:
    base: dict[str, object] = {
        "results": [], "errors": [], "jobs": [], "closes": [], "running_slots": {},
    }  # fmt: skip
    base.update(kw)
    return Observations(cuts=cuts, **base)  # type: ignore[arg-type]


def test_markers_survive_concatenation() -> None:
    audio = b"".join(chunk_audio(chunk_marker(3, n)) for n in (7, 8, 9))
    assert markers_in(audio) == ["c3.7", "c3.8", "c3.9"]


def test_each_cut_answered_once_is_completed_with_its_latency() -> None:
    got = account(
        observe(
            [cut(0, ["a", "b"], at=0.0), cut(1, ["c"], at=2.0)],
            results=[result(0, ["a", "b"], at=1.5), result(1, ["c"], at=3.0)],
        )
    )
    assert (got.cut, got.completed, got.lost, got.duplicated) == (2, 2, 0, 0)
    assert got.worst_latency_s == 1.5
    assert not got.promise_broken(10.0)


def test_a_merge_and_a_split_are_followed_chunk_by_chunk() -> None:
    got = account(
        observe(
            [cut(0, ["a", "b"]), cut(1, ["c", "d"])],
            # cut 0 and the first chunk of cut 1 in one utterance; cut 1's tail in the next
            results=[result(0, ["a", "b", "c"]), result(1, ["d"])],
        )
    )
    assert (got.completed, got.lost, got.merged, got.split) == (2, 0, 2, 1)
    assert got.promise_broken(10.0) == [
        "cuts moved: 2 merged with a neighbour, 1 split (the client's cuts must stay where it "
        "put them)"
    ]


def test_a_result_missing_is_lost_and_a_second_copy_is_a_duplicate() -> None:
    got = account(
        observe(
            [cut(0, ["a"]), cut(1, ["b"]), cut(2, ["c"])],
            results=[result(0, ["a"]), result(0, ["a"], at=2.0), result(2, ["c"])],
        )
    )
    assert (got.completed, got.lost, got.duplicated) == (2, 1, 1)
    assert len(got.promise_broken(10.0)) == 2


def test_an_error_covers_the_chunks_of_its_utterance() -> None:
    errors = [ErrorSeen(S, 1, "j", "NO_AVAILABLE_NODE", 2.0)]
    # No node saw utterance 1: its chunks are bounded by the answered neighbours (0 and 2).
    got = account(
        observe(
            [cut(0, ["a"]), cut(1, ["b"]), cut(2, ["c"])],
            results=[result(0, ["a"]), result(2, ["c"])],
            errors=errors,
        )
    )
    assert (got.completed, got.errored, got.lost) == (2, 1, 0)
    assert got.error_codes == {"NO_AVAILABLE_NODE": 1}
    # A node saw it: its audio says which chunks the error covers, even with nothing after it.
    got = account(
        observe(
            [cut(0, ["a"]), cut(1, ["b"])],
            results=[result(0, ["a"])],
            errors=[ErrorSeen(S, 1, "j", "JOB_TIMEOUT", 31.0)],
            jobs=[JobSeen(S, 1, ["b"])],
        )
    )
    assert (got.errored, got.lost, got.worst_latency_s) == (1, 0, 31.0)


def test_an_error_for_another_utterance_does_not_cover_a_lost_one() -> None:
    got = account(
        observe(
            [cut(0, ["a"]), cut(1, ["b"]), cut(2, ["c"])],
            results=[result(0, ["a"])],
            errors=[ErrorSeen(S, 2, "j", "NO_AVAILABLE_NODE", 2.0)],
            jobs=[JobSeen(S, 1, ["b"]), JobSeen(S, 2, ["c"])],
        )
    )
    assert (got.errored, got.lost) == (1, 1)


def test_a_socket_killed_with_its_replica_severs_what_it_had_not_answered() -> None:
    cuts = [cut(0, ["a"]), cut(1, ["b"]), CutSent(0, 2, S, ["c"], 0.0, interrupted=True)]
    severed = account(observe(cuts, closes=[SocketClosed(S, 1006, 3.0)]))
    assert (severed.severed, severed.lost, severed.interrupted) == (2, 0, 1)
    closed = account(observe(cuts, closes=[SocketClosed(S, 1012, 3.0)]))
    assert (closed.severed, closed.lost) == (0, 2)


def test_slots_left_after_the_settle_are_leaked() -> None:
    got = account(observe([], running_slots={"node-a": 0, "node-b": 2}))
    assert got.leaked_slots == 2
    assert got.promise_broken(10.0) == ["2 slot(s) still reserved after the settle"]


def test_recovery_ends_with_the_last_affected_cut() -> None:
    got = account(
        observe(
            [cut(0, ["a"], at=0.0), cut(1, ["b"], at=10.0), cut(2, ["c"], at=12.0)],
            results=[result(0, ["a"], at=1.0), result(1, ["b"], at=18.0), result(2, ["c"], 13.0)],
            fault_at=9.0,
        )
    )
    assert got.recovery_s == 9.0  # cut 1 answered 8 s late, at 18 s
