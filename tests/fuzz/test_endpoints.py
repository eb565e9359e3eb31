"""Hypothesis-generated frames against ``/ws/session`` and ``/ws/node`` of running replicas.

The properties and the harness are in tests/fuzz/harness.py, the frames in tests/fuzz/frames.py.
Two ``serve`` processes share one Redis; the fuzzed sockets go to the first, the honest pairs
cross both. The number of examples comes from a hypothesis profile: ``quick`` (the default, for
``make test``) or ``long`` (``LINGUA_FUZZ_PROFILE=long``, for ``make fuzz``).
"""

from __future__ import annotations

import os
from collections import Counter

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings

from tests.e2e.daemons import Replica
from tests.fuzz.conftest import MAX_FRAME_BYTES
from tests.fuzz.frames import Frame, Socket, frame_sequences
from tests.fuzz.harness import FuzzTarget, LogWatch, Outcome, honest_traffic

pytestmark = [
    pytest.mark.e2e,
    # The honest traffic runs in another thread while hypothesis draws frames, and hypothesis
    # takes any change of the global random state meanwhile for a strategy using `random`.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module:DeprecationWarning"),
    # The frame strategy is built from every protocol type: its repr is long, and never needed.
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

_common = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
# quick: the same examples every run, so `make test` does not turn red on a new random find;
# long: fresh random examples each run.
settings.register_profile("quick", max_examples=40, derandomize=True, **_common)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=2000, **_common)  # type: ignore[arg-type]
PROFILE = settings.get_profile(os.environ.get("LINGUA_FUZZ_PROFILE", "quick"))


def check(outcome: Outcome, target: FuzzTarget, seen: Counter[str]) -> None:
    what = outcome.describe()
    seen[f"closed {outcome.closed_code}" if outcome.closed_code else "usable"] += 1
    seen.update(f"sent {note.split(' (')[0]}" for note in outcome.frames)
    if outcome.closed_code is not None:
        allowed = {1009} if outcome.too_big else set()
        if outcome.socket == "node" and outcome.registers:
            allowed.add(1008)
        assert outcome.closed_code in allowed, f"wrong close code: {what}"
    if outcome.socket == "node":
        expected = {"node_register_ack", "job_assign", "job_cancel", "node_control"}
        if outcome.closed_code == 1008 and outcome.registers:
            expected.add("error")  # a refused registration is told why before the close
        strays = [m for m in outcome.received if m.get("type") not in expected]
        assert not strays, f"a node was sent {strays}: {what}"
    replica = target.replica
    assert replica.proc is not None and replica.proc.poll() is None, f"replica died: {what}"
    assert replica.get("/readyz")[0] == 200, f"replica not ready: {what}"
    errors = target.log.new_errors()
    assert not errors, f"ERROR in the replica's log: {errors[:3]} after {what}"


def fuzz(socket: Socket, replicas: list[Replica]) -> None:
    """Run the profile's examples of ``socket`` frames with the honest pairs running beside."""
    target_replica = replicas[0]
    with (
        anyio.from_thread.start_blocking_portal(
            "asyncio", backend_options={"use_uvloop": True}
        ) as portal,
        portal.wrap_async_context_manager(honest_traffic(replicas)) as honest,
    ):
        target = FuzzTarget(
            target_replica, MAX_FRAME_BYTES, honest, LogWatch(target_replica.log_path)
        )
        target.log.new_errors()  # from here on

        seen: Counter[str] = Counter()

        @settings(PROFILE)
        @given(frame_sequences(socket, MAX_FRAME_BYTES))
        def one_example(frames: list[Frame]) -> None:
            check(portal.call(target.example, socket, frames), target, seen)

        one_example()
    print(f"{socket}: {sorted(seen.items())}")  # what the examples did (pytest -s)
    # The run reached both endings: sockets kept usable, and closed for an oversized frame.
    assert seen["usable"] and seen["closed 1009"], seen
    for pair in honest:
        assert not pair.failures, f"honest traffic disturbed: {pair.failures}"
        assert pair.completed == pair.sent > 0
        assert not pair.unexpected(), f"honest browser got {pair.unexpected()[:3]}"
    for replica in replicas:
        assert not LogWatch(replica.log_path).new_errors()


def test_fuzzed_session_frames(fuzzed_replicas: list[Replica]) -> None:
    fuzz("session", fuzzed_replicas)


def test_fuzzed_node_frames(fuzzed_replicas: list[Replica]) -> None:
    fuzz("node", fuzzed_replicas)
