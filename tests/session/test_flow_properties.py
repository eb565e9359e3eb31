"""Random event sequences against the session flow, checking its invariants after every step.

A simulated gateway (``Driver``) owns the timers, fires the due ones or sends stale ones, and the
clock only moves forward, except for deliberate steps back (a wall clock can do that). Streaming
audio uses bytes < 0x80 somewhere (Plan-A headers, low fill); explicit utterances use bytes >= 0x80
only, so every ``FinalizeUtterance`` can be traced back to the path it came from.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from scheduler import session_flow as flow_
from scheduler.config import SessionConfig
from tests.session.driver import Driver, opus

REASONS = {"manual", "silence", "max_duration", "size", "close"}

configs = st.builds(
    SessionConfig,
    pause_ms=st.sampled_from([0, 50, 200, 500]),
    max_duration_ms=st.integers(100, 1000),
    max_utterance_bytes=st.integers(1024, 4096),
    hangover_auto_ms=st.sampled_from([0, 30, 150]),
    hangover_manual_ms=st.sampled_from([0, 40, 200]),
    padding_auto_ms=st.just(220),
    padding_manual_ms=st.just(280),
    tts_hold_max_ms=st.sampled_from([0, 300, 2000]),
    max_held_utterances=st.integers(0, 3),
)

streaming_audio = st.one_of(
    st.builds(opus, st.integers(1, 25), st.integers(1, 0x7F)),
    st.binary(min_size=0, max_size=1500).map(lambda b: bytes(x & 0x7F for x in b)),
    st.just(b""),
)
explicit_audio = st.one_of(
    st.just(b""), st.binary(min_size=1, max_size=1500).map(lambda b: bytes(x | 0x80 for x in b))
)
steps = st.integers(0, 700)


def snapshot(flow: flow_.SessionFlow) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in vars(flow).items()}


class FlowMachine(RuleBasedStateMachine):
    @initialize(config=configs)
    def start(self, config: SessionConfig) -> None:
        self.config = config
        self.d = Driver(config)
        self.streamed = bytearray()  # every accepted streaming byte, in order
        self.explicit_sent: dict[int, bytes] = {}  # accepted explicit utterances by client index
        self.explicit_next = 0
        self.closed = False
        self.checked = 0  # finals already checked

    # -- events ----------------------------------------------------------------------------

    def feed(self, event: flow_.Event, dt: int) -> list[flow_.Action]:
        before = snapshot(self.d.flow)
        actions = self.d.feed(event, self.d.now + dt)
        if any(isinstance(a, flow_.InputRejected) for a in actions):
            assert len(actions) == 1, actions
            assert snapshot(self.d.flow) == before, "a refused input changed the flow"
        return actions

    @rule(audio=streaming_audio, final=st.booleans(), dt=steps)
    def chunk(self, audio: bytes, final: bool, dt: int) -> None:
        actions = self.feed(flow_.AudioReceived(audio, final), dt)
        refused = [a for a in actions if isinstance(a, flow_.InputRejected)]
        if self.closed:
            assert refused and refused[0].code == "SESSION_CLOSED"
        elif len(audio) > self.config.max_utterance_bytes:
            assert refused and refused[0].code == "INVALID_MESSAGE"
        else:
            assert not refused
            self.streamed += audio

    @rule(dt=steps)
    def tts_started(self, dt: int) -> None:
        self.feed(flow_.TtsPlaybackStarted(), dt)

    @rule(dt=steps, ts=st.one_of(st.none(), st.integers(0, 2**40)))
    def tts_ended(self, dt: int, ts: int | None) -> None:
        self.feed(flow_.TtsPlaybackEnded(ts), dt)

    @rule(offset=st.integers(-1, 5), audio=explicit_audio, manual=st.booleans(), dt=steps)
    def explicit(self, offset: int, audio: bytes, manual: bool, dt: int) -> None:
        index = self.explicit_next + offset
        actions = self.feed(flow_.ExplicitUtterance(audio, index, manual), dt)
        refused = [a for a in actions if isinstance(a, flow_.InputRejected)]
        acceptable = (
            not self.closed
            and index >= self.explicit_next
            and index not in self.explicit_sent
            and index <= self.explicit_next + self.config.max_held_utterances
            and len(audio) <= self.config.max_utterance_bytes
        )
        assert bool(refused) != acceptable, (index, self.explicit_next, actions)
        if acceptable:
            self.explicit_sent[index] = audio
            while self.explicit_next in self.explicit_sent:
                self.explicit_next += 1

    @precondition(lambda self: bool(self.d.timers))
    @rule()
    def fire_due_timer(self) -> None:
        self.d.fire_next()

    @precondition(lambda self: bool(self.d.timers))
    @rule(late=st.integers(1, 2000))
    def fire_late(self, late: int) -> None:
        """The gateway's loop was busy: the event comes well after the deadline."""
        deadline = min(d for d, _ in self.d.timers.values())
        self.d.now = max(self.d.now, deadline + late)
        self.d.fire_next()

    @rule(kind=st.sampled_from(["silence", "hangover", "other"]), back=st.integers(1, 5), dt=steps)
    def stale_timer(self, kind: str, back: int, dt: int) -> None:
        current = {k: g for k, (_, g) in self.d.timers.items()}
        generation = current.get(kind, 0) - back
        before = snapshot(self.d.flow)
        actions = self.feed(flow_.TimerFired(kind, generation), 0)
        after = snapshot(self.d.flow)
        del before["_now"], after["_now"]  # the clock may move; nothing else may
        assert actions == [] and after == before

    @rule(back=st.integers(1, 5000))
    def clock_steps_back(self, back: int) -> None:
        self.feed(flow_.TtsPlaybackEnded(None), -min(back, self.d.now))

    @rule(dt=steps)
    def close(self, dt: int) -> None:
        self.feed(flow_.CloseSession(), dt)
        self.closed = True
        self.check_everything_dispatched()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def finals_are_well_formed(self) -> None:
        finals = self.d.finals
        assert [f.utterance_index for f in finals] == list(range(len(finals)))
        stream = [f for f in finals if min(f.audio) < 0x80]
        for f in finals[self.checked :]:
            assert f.audio, "an empty utterance was dispatched"
            assert f.reason in REASONS
            assert len(f.audio) <= self.config.max_utterance_bytes
        self.checked = len(finals)
        padding = {"manual": 280, "size": 0}
        for f in stream:
            assert f.padding_ms == padding.get(f.reason, 220)
        # The turn changes exactly after manual / silence / close cuts.
        for prev, nxt in itertools.pairwise(stream):
            keeps = prev.reason in ("max_duration", "size")
            assert (prev.turn_id == nxt.turn_id) == keeps, (prev, nxt)
        # Streaming audio is dispatched in order, nothing lost, nothing duplicated.
        sent = b"".join(f.audio for f in stream)
        assert len(sent) + self.d.flow.buffered_bytes == len(self.streamed)
        assert sent == bytes(self.streamed[: len(sent)])
        explicit = [f for f in finals if min(f.audio) >= 0x80]
        turns = [f.turn_id for f in explicit]
        assert len(set(turns)) == len(turns)
        assert not set(turns) & {f.turn_id for f in stream}
        assert all(f.padding_ms == 0 and f.reason in ("manual", "silence") for f in explicit)

    @invariant()
    def timers_agree_and_buffered_audio_is_never_stranded(self) -> None:
        flow = self.d.flow
        timer = flow._timer
        expected = {} if timer is None else {timer.kind: (timer.deadline_ms, timer.generation)}
        assert self.d.timers == expected
        if flow.buffered_bytes and flow.state is not flow_.SessionState.CLOSED:
            assert timer is not None or self.config.pause_ms == 0
        assert flow.held_utterances <= self.config.max_held_utterances
        assert flow.buffered_bytes <= self.config.max_utterance_bytes

    def check_everything_dispatched(self) -> None:
        finals = self.d.finals
        sent = b"".join(f.audio for f in finals if min(f.audio) < 0x80)
        assert sent == bytes(self.streamed)
        released = [f.audio for f in finals if min(f.audio) >= 0x80]
        expected = [a for _, a in sorted(self.explicit_sent.items()) if a]
        assert released == expected
        assert self.d.flow.buffered_bytes == 0 and self.d.flow.held_utterances == 0
        assert self.d.timers == {}

    def teardown(self) -> None:
        if hasattr(self, "d") and not self.closed:
            self.close(0)


FlowMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFlowMachine = FlowMachine.TestCase
