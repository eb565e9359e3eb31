"""The session flow, one rule per test (original-protocol.md §3.2-3.6), no sockets, no Redis."""

from __future__ import annotations

import base64
import uuid
from types import SimpleNamespace

import pytest

from scheduler import session_flow as flow_
from scheduler.config import SessionConfig
from tests.realclients.peers import plan_a_payload, recorded
from tests.session.driver import Driver, finals_of, opus, settings

A, B, C = opus(10, 1), opus(10, 2), opus(10, 3)  # 200 ms each, distinguishable


# -- manual (is_final) ---------------------------------------------------------------------


def test_is_final_cuts_after_the_manual_hangover_with_manual_padding() -> None:
    d = Driver()
    d.chunk(A, at=0)
    actions = d.final(at=100)
    assert flow_.ArmTimer("hangover", 300, actions[-1].generation) == actions[-1]
    assert not d.finals
    assert d.flow.state is flow_.SessionState.HANGOVER
    got = d.fire_next()
    assert finals_of(got) == [
        flow_.FinalizeUtterance(
            0, A, "manual", d.finals[0].turn_id, padding_ms=280, finalized_ms=300
        )
    ]
    assert d.flow.state is flow_.SessionState.IDLE and d.flow.buffered_bytes == 0


def test_is_final_on_a_chunk_with_audio_includes_that_audio() -> None:
    d = Driver(settings(hangover_manual_ms=0))
    d.chunk(A, at=0)
    got = d.chunk(B, at=50, final=True)
    assert [(f.audio, f.reason) for f in finals_of(got)] == [(A + B, "manual")]


def test_zero_hangover_cuts_at_once_without_a_timer() -> None:
    d = Driver(settings(hangover_manual_ms=0))
    d.chunk(A, at=0)
    got = d.final(at=10)
    assert [type(a) for a in got] == [flow_.CancelTimer, flow_.FinalizeUtterance]
    assert d.timers == {}


def test_is_final_with_nothing_buffered_dispatches_nothing() -> None:
    d = Driver(settings(hangover_manual_ms=0))
    assert d.final(at=0) == []
    d.chunk(A, at=10)
    d.final(at=20)
    assert d.final(at=30) == []
    assert [f.utterance_index for f in d.finals] == [0]


def test_audio_arriving_during_the_hangover_joins_the_utterance() -> None:
    d = Driver()
    d.chunk(A, at=0)
    d.final(at=100)  # hangover until 300
    d.chunk(B, at=250)
    d.run_timers()
    assert [(f.audio, f.reason) for f in d.finals] == [(A + B, "manual")]


def test_a_chunk_after_an_overdue_hangover_starts_the_next_utterance() -> None:
    """The gateway's timer may run late; the result is the same as if it had been on time."""
    d = Driver()
    d.chunk(A, at=0)
    d.final(at=100)  # hangover until 300, never fired by the gateway
    got = d.chunk(B, at=301)
    assert [(f.utterance_index, f.audio) for f in finals_of(got)] == [(0, A)]
    assert d.flow.state is flow_.SessionState.SPEAKING and d.flow.buffered_bytes == len(B)


def test_a_late_timer_event_also_expires_the_timer_it_leads_to() -> None:
    d = Driver()
    d.chunk(A, at=0)
    generation = d.timers.pop("silence")[1]
    got = d.feed(flow_.TimerFired("silence", generation), at=3200)  # hangover ended at 3150
    assert [(f.audio, f.reason) for f in finals_of(got)] == [(A, "silence")]
    assert d.timers == {} and d.flow.state is flow_.SessionState.IDLE


# -- silence -------------------------------------------------------------------------------


def test_silence_timer_is_rearmed_by_each_non_empty_chunk() -> None:
    d = Driver()
    first = d.chunk(A, at=0)
    assert first == [flow_.ArmTimer("silence", 3000, first[0].generation)]
    d.chunk(B, at=1000)
    assert d.timers["silence"][0] == 4000
    assert d.chunk(b"", at=2000) == []  # an empty chunk is not speech: the timer stays
    assert d.timers["silence"][0] == 4000


def test_silence_cuts_after_pause_then_auto_hangover_with_auto_padding() -> None:
    d = Driver()
    d.chunk(A, at=0)
    d.chunk(B, at=1000)
    got = d.fire_next()  # at 4000
    assert got == [flow_.ArmTimer("hangover", 4150, got[0].generation)]
    got = d.fire_next()
    assert [(f.audio, f.reason, f.padding_ms) for f in finals_of(got)] == [(A + B, "silence", 220)]


def test_pause_ms_zero_disables_the_silence_cut() -> None:
    d = Driver(settings(pause_ms=0))
    d.chunk(A, at=0)
    assert d.timers == {}
    d.chunk(B, at=3_600_000)
    assert d.finals == [] and d.flow.buffered_bytes == len(A + B)


def test_gap_rule_a_late_chunk_finds_the_previous_utterance_cut() -> None:
    """The silence deadline passed unfired: the previous utterance ends without the new chunk."""
    d = Driver()
    d.chunk(A, at=0)
    got = d.chunk(B, at=5000)
    assert [(f.utterance_index, f.audio, f.reason) for f in finals_of(got)] == [(0, A, "silence")]
    d.final(at=5100)
    d.run_timers()
    assert [f.audio for f in d.finals] == [A, B]
    assert d.finals[0].turn_id != d.finals[1].turn_id


def test_a_late_chunk_inside_the_silence_hangover_joins_it() -> None:
    d = Driver()
    d.chunk(A, at=0)
    assert finals_of(d.chunk(B, at=3100)) == []  # silence at 3000, hangover open until 3150
    d.run_timers()
    assert [(f.audio, f.reason) for f in d.finals] == [(A + B, "silence")]


def test_stale_and_early_timer_events_are_ignored() -> None:
    d = Driver()
    first = d.chunk(A, at=0)[0]
    d.chunk(B, at=1000)
    assert d.feed(flow_.TimerFired("silence", first.generation), at=3000) == []
    current = d.timers["silence"][1]
    # Fired early (the caller dropped it): it is armed again, unchanged.
    del d.timers["silence"]
    assert d.feed(flow_.TimerFired("silence", current), at=3500) == [
        flow_.ArmTimer("silence", 4000, current)
    ]
    assert d.feed(flow_.TimerFired("hangover", current), at=3600) == []  # wrong kind
    assert d.feed(flow_.TimerFired("silence", current + 99), at=3700) == []
    assert d.flow.state is flow_.SessionState.SPEAKING
    d.run_timers()
    assert [f.audio for f in d.finals] == [A + B]


# -- max duration and size -----------------------------------------------------------------


def test_max_duration_cuts_and_keeps_the_turn_until_the_next_silence() -> None:
    d = Driver(settings(max_duration_ms=1000))
    for i in range(4):
        assert finals_of(d.chunk(opus(10), at=i * 200)) == []
    assert d.timers["silence"][0] == 600 + 3000
    got = d.chunk(opus(10), at=800)  # 50 packets = 1000 ms
    assert got[-1] == flow_.ArmTimer("hangover", 950, got[-1].generation)
    d.run_timers(until=950)
    first = d.finals[0]
    assert (first.reason, first.padding_ms, len(first.audio)) == ("max_duration", 220, 50 * 60)
    d.chunk(opus(5), at=1000)
    d.run_timers()  # silence: ends the turn
    second = d.finals[1]
    assert (second.utterance_index, second.reason) == (1, "silence")
    assert second.turn_id == first.turn_id
    d.chunk(opus(5), at=10_000)
    d.final(at=10_100)
    d.run_timers()
    third = d.finals[2]
    assert third.turn_id != first.turn_id and third.reason == "manual"


def test_is_final_outranks_max_duration_on_the_same_chunk() -> None:
    d = Driver(settings(max_duration_ms=200, hangover_manual_ms=0))
    got = d.chunk(A, at=0, final=True)
    assert [f.reason for f in finals_of(got)] == ["manual"]


def test_is_final_during_an_automatic_hangover_makes_it_manual_never_later() -> None:
    d = Driver(settings(max_duration_ms=200, hangover_auto_ms=150, hangover_manual_ms=500))
    d.chunk(A, at=0)  # max_duration: hangover until 150
    assert d.final(at=100) == []  # manual would be 600: the cut does not move later
    assert d.timers["hangover"][0] == 150
    d.run_timers()
    assert [(f.reason, f.padding_ms) for f in d.finals] == [("manual", 280)]


def test_is_final_during_a_long_automatic_hangover_brings_it_forward() -> None:
    d = Driver(settings(hangover_auto_ms=1000, hangover_manual_ms=100))
    d.chunk(A, at=0)
    d.fire_next()  # silence at 3000, hangover until 4000
    d.final(at=3100)
    assert d.timers["hangover"][0] == 3200
    d.run_timers()
    assert [f.reason for f in d.finals] == ["manual"]


def test_size_guard_cuts_before_the_buffer_would_overflow_and_keeps_the_turn() -> None:
    d = Driver(settings(max_utterance_bytes=1024, hangover_manual_ms=0))
    d.chunk(b"\x01" * 600, at=0)
    got = d.chunk(b"\x02" * 600, at=10)
    assert [(f.audio, f.reason, f.padding_ms) for f in finals_of(got)] == [
        (b"\x01" * 600, "size", 0)
    ]
    assert d.flow.buffered_bytes == 600
    d.final(at=20)
    assert [f.audio for f in d.finals] == [b"\x01" * 600, b"\x02" * 600]
    assert d.finals[0].turn_id == d.finals[1].turn_id


def test_a_chunk_that_would_overflow_during_a_hangover_ends_it_at_once() -> None:
    d = Driver(settings(max_utterance_bytes=1024))
    d.chunk(b"\x01" * 600, at=0)
    d.final(at=10)  # manual hangover until 210
    got = d.chunk(b"\x02" * 600, at=20)
    assert [(f.audio, f.reason) for f in finals_of(got)] == [(b"\x01" * 600, "manual")]
    assert d.flow.state is flow_.SessionState.SPEAKING and d.flow.buffered_bytes == 600


def test_a_chunk_larger_than_an_utterance_is_rejected_and_changes_nothing() -> None:
    d = Driver(settings(max_utterance_bytes=1024))
    d.chunk(A, at=0)
    before = (repr(d.flow), dict(d.timers))
    got = d.chunk(b"\x00" * 1025, at=10, final=True)
    assert len(got) == 1 and isinstance(got[0], flow_.InputRejected)
    assert got[0].code == "INVALID_MESSAGE" and "max_utterance_bytes" in got[0].message
    assert (repr(d.flow), dict(d.timers)) == before
    d.run_timers()
    assert [f.audio for f in d.finals] == [A]


# -- TTS -----------------------------------------------------------------------------------


def test_tts_playback_holds_the_silence_timer_and_its_end_restarts_it() -> None:
    d = Driver()
    d.chunk(A, at=0)
    d.feed(flow_.TtsPlaybackStarted(), at=1000)
    assert d.timers["silence"][0] == 1000 + 30000 + 3000
    d.feed(flow_.TtsPlaybackEnded(ts_end_ms=123), at=8000)  # client clock: not used
    assert d.timers["silence"][0] == 11000
    d.run_timers()
    assert [f.reason for f in d.finals] == ["silence"]


def test_a_lost_tts_end_holds_the_utterance_only_for_tts_hold_max_ms() -> None:
    d = Driver(settings(tts_hold_max_ms=5000))
    d.chunk(A, at=0)
    d.feed(flow_.TtsPlaybackStarted(), at=1000)
    d.run_timers()
    assert d.now == 1000 + 5000 + 3000 + 150 and [f.audio for f in d.finals] == [A]


def test_tts_events_without_audio_arm_nothing() -> None:
    d = Driver()
    assert d.feed(flow_.TtsPlaybackStarted(), at=0) == []
    assert d.feed(flow_.TtsPlaybackEnded(ts_end_ms=None), at=10) == []


# -- indices, turns, liveness --------------------------------------------------------------


def test_indices_are_dense_from_zero_and_turn_ids_are_uuids() -> None:
    d = Driver(settings(hangover_manual_ms=0))
    for i in range(5):
        d.final(at=i * 10)  # empty: consumes nothing
        d.chunk(A, at=i * 10 + 1, final=True)
    assert [f.utterance_index for f in d.finals] == [0, 1, 2, 3, 4]
    turns = [f.turn_id for f in d.finals]
    assert len(set(turns)) == 5 and all(str(uuid.UUID(t)) == t for t in turns)


def test_turn_ids_differ_between_sessions() -> None:
    config, params = SessionConfig(hangover_manual_ms=0), flow_.SessionParams()
    turns = set()
    for _ in range(2):
        flow = flow_.SessionFlow(config, params)
        (final,) = finals_of(flow.handle(flow_.AudioReceived(A, is_final=True), 0))
        turns.add(final.turn_id)
    assert len(turns) == 2


def test_a_quiet_session_never_goes_deaf() -> None:
    d = Driver()
    d.chunk(A, at=0)
    d.run_timers()
    assert d.timers == {}
    d.chunk(B, at=3_600_000)  # an hour later
    d.run_timers()
    assert [(f.utterance_index, f.audio) for f in d.finals] == [(0, A), (1, B)]


def test_a_clock_that_steps_back_is_treated_as_standing_still() -> None:
    d = Driver()
    d.chunk(A, at=10_000)
    got = d.chunk(B, at=5_000)
    assert got[-1].deadline_ms == 13_000


# -- close ---------------------------------------------------------------------------------


def test_close_flushes_the_buffer_then_refuses_audio() -> None:
    d = Driver()
    d.chunk(A, at=0)
    got = d.feed(flow_.CloseSession(), at=10)
    assert [(f.audio, f.reason, f.padding_ms) for f in finals_of(got)] == [(A, "close", 220)]
    assert d.timers == {} and d.flow.state is flow_.SessionState.CLOSED
    (rejected,) = d.chunk(B, at=20)
    assert isinstance(rejected, flow_.InputRejected) and rejected.code == "SESSION_CLOSED"
    assert d.feed(flow_.TimerFired("silence", 1), at=5000) == []
    assert d.feed(flow_.CloseSession(), at=5001) == []


def test_close_during_a_hangover_flushes_with_the_pending_reason() -> None:
    d = Driver()
    d.chunk(A, at=0)
    d.final(at=10)
    got = d.feed(flow_.CloseSession(), at=20)
    assert [(f.audio, f.reason) for f in finals_of(got)] == [(A, "manual")]


def test_close_with_nothing_buffered_dispatches_nothing() -> None:
    d = Driver()
    assert finals_of(d.feed(flow_.CloseSession(), at=0)) == []


# -- explicit utterance messages -----------------------------------------------------------


def utt(audio: bytes, index: int, manual: bool = True) -> flow_.ExplicitUtterance:
    return flow_.ExplicitUtterance(audio=audio, utterance_index=index, manual_cut=manual)


def test_explicit_utterances_take_the_shared_index_in_client_order() -> None:
    d = Driver(settings(hangover_manual_ms=0))
    d.chunk(A, at=0, final=True)  # streaming: index 0
    got = d.feed(utt(B, 0), at=10)
    (first,) = finals_of(got)
    assert (first.utterance_index, first.audio, first.reason, first.padding_ms) == (
        1,
        B,
        "manual",
        0,
    )
    assert d.feed(utt(C, 2, manual=False), at=20) == []  # held: 1 is missing
    assert d.flow.held_utterances == 1
    got = d.feed(utt(A, 1), at=30)
    assert [(f.utterance_index, f.audio, f.reason) for f in finals_of(got)] == [
        (2, A, "manual"),
        (3, C, "silence"),
    ]
    assert len({f.turn_id for f in d.finals}) == 4


def test_explicit_utterance_does_not_disturb_the_streaming_utterance() -> None:
    d = Driver()
    d.chunk(A, at=0)
    d.feed(utt(B, 0), at=10)
    d.final(at=20)
    d.run_timers()
    assert [(f.utterance_index, f.audio) for f in d.finals] == [(0, B), (1, A)]


def test_explicit_utterance_refusals_change_nothing() -> None:
    d = Driver(settings(max_held_utterances=2, max_utterance_bytes=1024))
    d.feed(utt(A, 0), at=0)
    before = repr(d.flow)
    for bad, words in (
        (utt(B, 0), "already received"),
        (utt(B, -1), "negative"),
        (utt(B, 4), "ahead"),
        (utt(b"\x00" * 1025, 1), "max_utterance_bytes"),
    ):
        (rejected,) = d.feed(bad, at=10)
        assert isinstance(rejected, flow_.InputRejected) and words in rejected.message
    assert repr(d.flow) == before
    d.feed(utt(B, 3), at=20)
    (rejected,) = d.feed(utt(C, 3), at=30)
    assert "already received" in rejected.message


def test_an_empty_explicit_utterance_takes_its_slot_but_no_index() -> None:
    d = Driver()
    assert d.feed(utt(b"", 0), at=0) == []
    (final,) = finals_of(d.feed(utt(A, 1), at=10))
    assert final.utterance_index == 0


def test_close_releases_held_explicit_utterances_in_order() -> None:
    d = Driver()
    d.chunk(A, at=0)
    d.feed(utt(C, 3), at=10)
    d.feed(utt(B, 1), at=20)
    got = d.feed(flow_.CloseSession(), at=30)
    assert [(f.utterance_index, f.audio, f.reason) for f in finals_of(got)] == [
        (0, A, "close"),
        (1, B, "manual"),
        (2, C, "manual"),
    ]
    assert d.flow.held_utterances == 0


# -- parameters and the duration estimate --------------------------------------------------


def test_params_from_init_read_by_attribute_with_defaults() -> None:
    bare = SimpleNamespace(src_lang="zh", tgt_lang="en")
    assert flow_.SessionParams.from_init(bare) == flow_.SessionParams()
    nulls = SimpleNamespace(mode=None, enable_streaming_asr=None, audio_format=None)
    assert flow_.SessionParams.from_init(nulls) == flow_.SessionParams()
    init = SimpleNamespace(
        mode="two_way_auto", enable_streaming_asr=False, audio_format="pcm16", sample_rate=8000
    )
    assert flow_.SessionParams.from_init(init) == flow_.SessionParams(
        audio_format="pcm16", sample_rate=8000, mode="two_way_auto", enable_streaming_asr=False
    )
    odd = SimpleNamespace(audio_format="flac", sample_rate=0)
    assert flow_.SessionParams.from_init(odd) == flow_.SessionParams()


@pytest.mark.parametrize("kwargs", [{"audio_format": "flac"}, {"sample_rate": 0}])
def test_params_refuse_values_they_cannot_estimate(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        flow_.SessionParams(**kwargs)  # type: ignore[arg-type]


def test_duration_estimate() -> None:
    config = SessionConfig()
    opus_params, pcm = flow_.SessionParams(), flow_.SessionParams(audio_format="pcm16")
    assert flow_.estimate_duration_us(opus(10), opus_params, config) == 200_000
    # A bigger packet is still one 20 ms frame.
    big = b"\xc8\x00" + b"\x00" * 200
    assert flow_.estimate_duration_us(big, opus_params, config) == 20_000
    # Not Plan-A framed: the byte rate (3000 B/s).
    assert flow_.estimate_duration_us(b"\xff\xff" + b"\x00" * 298, opus_params, config) == 100_000
    assert flow_.estimate_duration_us(b"\x00" * 32000, pcm, config) == 1_000_000
    assert flow_.estimate_duration_us(b"", opus_params, config) == 0


def test_the_end_to_end_settings_cut_at_once() -> None:
    """tests/e2e/conftest.py: pause 400, max_duration 1000, no hangovers."""
    d = Driver(
        settings(pause_ms=400, max_duration_ms=1000, hangover_auto_ms=0, hangover_manual_ms=0)
    )
    for i in range(4):
        d.chunk(opus(10), at=i * 10)
    got = d.chunk(opus(10), at=40)  # 1000 ms: cut now, the turn goes on
    assert [(f.utterance_index, f.reason) for f in finals_of(got)] == [(0, "max_duration")]
    d.chunk(opus(5), at=50)
    d.run_timers()
    assert d.now == 450 and [f.reason for f in d.finals] == ["max_duration", "silence"]
    assert d.finals[0].turn_id == d.finals[1].turn_id
    d.chunk(opus(5), at=1000)
    d.final(at=1001)
    assert d.finals[2].reason == "manual" and d.finals[2].turn_id != d.finals[0].turn_id


def test_the_recorded_burst_of_tiny_cuts_dispatches_every_byte_the_last_cut_included() -> None:
    """browser_silence_burst.json from 5642 ms, at its recorded times and default settings:
    seven ``is_final`` end audio the client sent, but the packet at 11094 ms comes 64 ms after
    the ``is_final`` of 11030 ms, inside its manual hangover, so it joins that utterance and the
    ``is_final`` of 11129 ms finds it still cutting: six utterances, as the scheduler the
    recording was made against answered (its ``ui_event``s at 11233 ... 12602 ms). The last
    cut (``is_final`` at 12396 ms) is dispatched at its hangover, 12596 ms."""
    d = Driver(mode="two_way_auto")
    sent = [
        (e["ms"], base64.b64decode(plan_a_payload(e["frame"]["payload"])), e["frame"]["is_final"])
        for e in recorded("browser_silence_burst.json")
        if e["dir"] == "out" and e["frame"]["type"] == "audio_chunk" and e["ms"] >= 5642
    ]
    assert sum(1 for _, _, final in sent if final) == 7
    for at, audio, final in sent:
        d.run_timers(until=at)
        d.chunk(audio, at=at, final=final)
    d.run_timers()
    assert [(f.utterance_index, f.finalized_ms) for f in d.finals] == [
        (0, 11230),
        (1, 11582),
        (2, 11837),
        (3, 12091),
        (4, 12345),
        (5, 12596),
    ]
    assert b"".join(f.audio for f in d.finals) == b"".join(audio for _, audio, _ in sent)
    assert {f.reason for f in d.finals} == {"manual"}
    assert d.flow.state is flow_.SessionState.IDLE and d.flow.buffered_bytes == 0
