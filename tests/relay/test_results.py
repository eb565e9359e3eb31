"""``ResultRelay`` and the other session frames (§2.5, §3.8, §6.3 item 6)."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from scheduler import protocol as wire
from scheduler import relay
from scheduler.config import SessionConfig
from tests.protocol.examples import EXAMPLES

BY_NAME = {name: text for name, _, text in EXAMPLES}
SID = "s-1A2B3C4D"
T0 = 1767225603000


def result(name: str = "job_result", **overrides: Any) -> wire.JobResult:
    message = orjson.loads(BY_NAME[name])
    message.update(overrides)
    decoded = wire.decode_node_message(orjson.dumps(message))
    assert isinstance(decoded, wire.JobResult)
    return decoded


def new_relay(**config: Any) -> relay.ResultRelay:
    return relay.ResultRelay(SessionConfig(**config), SID)


def as_json(frames: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(wire.encode(f)) for f in frames]


def kinds(frames: list[Any]) -> list[str]:
    return [
        f"ui_event:{f['event']}" if f["type"] == "ui_event" else f["type"] for f in as_json(frames)
    ]


def only(frames: list[Any], cls: type[Any]) -> Any:
    found = [f for f in frames if isinstance(f, cls)]
    assert len(found) == 1, frames
    return found[0]


# -- translation_result --------------------------------------------------------------------


def test_reference_result_becomes_the_reference_translation_result() -> None:
    frames = new_relay().on_result(result(), T0)
    assert kinds(frames) == ["ui_event:ASR_FINAL", "ui_event:NMT_DONE", "translation_result"]
    got = as_json(frames)[-1]
    expected = orjson.loads(BY_NAME["translation_result"])
    assert got["group_id"] == f"group_{SID}_{T0}"
    expected["group_id"] = got["group_id"]
    assert got == expected


def test_defaults_when_the_node_omits_fields() -> None:
    bare = result(
        tts_format=None, text_translated=None, tts_audio=None, extra=None, processing_time_ms=None
    )
    got = as_json(new_relay().on_result(bare, T0))[-1]
    assert got["tts_format"] == "pcm16"
    assert got["text_translated"] == "" and got["tts_audio"] == ""
    assert "service_timings" not in got and "extra" not in got
    assert got["scheduler_sent_at_ms"] == T0


def test_service_timings_prefer_the_nodes_own() -> None:
    timed = result(extra={"service_timings": {"asr_ms": 10, "nmt_ms": 20, "total_ms": 40}})
    got = only(new_relay().on_result(timed, T0), wire.TranslationResult)
    assert got.service_timings == wire.ServiceTimings(asr_ms=10, nmt_ms=20, total_ms=40)
    plain = only(new_relay().on_result(result(), T0), wire.TranslationResult)
    assert plain.service_timings == wire.ServiceTimings(total_ms=1840)


def test_node_extra_keys_are_filtered_out() -> None:
    noisy = result(extra={"language_probability": 0.5, "pendingEmptyJobs": [1], "x": {}})
    got = as_json(new_relay().on_result(noisy, T0))[-1]
    assert got["extra"] == {"language_probability": 0.5}


def test_result_goes_to_this_relays_session_with_the_nodes_index_and_trace() -> None:
    got = only(
        new_relay().on_result(result(utterance_index=7, trace_id="t-9"), T0),
        wire.TranslationResult,
    )
    assert (got.session_id, got.utterance_index, got.trace_id) == (SID, 7, "t-9")


def test_translation_without_asr_text_has_no_group() -> None:
    frames = new_relay().on_result(result(text_asr=""), T0)
    assert kinds(frames) == ["ui_event:NMT_DONE", "translation_result"]
    got = as_json(frames)[-1]
    assert "group_id" not in got and "part_index" not in got


# -- groups ------------------------------------------------------------------------------------


def _part(r: relay.ResultRelay, job: str, now: int) -> tuple[str, int]:
    got = only(r.on_result(result(job_id=job), now), wire.TranslationResult)
    return got.group_id, got.part_index


def test_results_within_the_window_share_a_group() -> None:
    r = new_relay(result_group_window_ms=2000)
    g0, p0 = _part(r, "a", T0)
    g1, p1 = _part(r, "b", T0 + 2000)
    assert (g1, p0, p1) == (g0, 0, 1)
    g2, p2 = _part(r, "c", T0 + 2001)  # 2001 ms after the group's anchor
    assert g2 == f"group_{SID}_{T0 + 2001}" and p2 == 0


def test_tts_play_ended_restarts_the_window_of_its_own_group_only() -> None:
    r = new_relay(result_group_window_ms=2000)
    group, _ = _part(r, "a", T0)
    r.on_tts_ended("group_someone_else", T0 + 5000)
    r.on_tts_ended(group, T0 + 5000)
    assert _part(r, "b", T0 + 6500) == (group, 1)
    r.close()
    assert _part(r, "c", T0 + 6600) == (f"group_{SID}_{T0 + 6600}", 0)


# -- empty results, dedup ------------------------------------------------------------------------


@pytest.mark.parametrize("reason", sorted(relay.EMPTY_ACK_REASONS))
def test_empty_acknowledgements_are_swallowed(reason: str) -> None:
    ack = result(text_asr="", text_translated="", tts_audio=None, extra={"reason": reason})
    assert new_relay().on_result(ack, T0) == []


def test_reference_empty_ack_example_is_swallowed() -> None:
    assert new_relay().on_result(result("job_result_empty_ack"), T0) == []


def test_all_empty_success_becomes_missing_result() -> None:
    empty = result(text_asr="", text_translated="", tts_audio="", extra=None)
    frames = new_relay().on_result(empty, T0)
    assert as_json(frames) == [
        {
            "type": "missing_result",
            "session_id": SID,
            "utterance_index": 3,
            "reason": "silence_detected",
            "created_at_ms": T0,
            "trace_id": "0b7e...",
        }
    ]


def test_a_repeated_result_is_dropped() -> None:
    r = new_relay()
    assert r.on_result(result(), T0)
    assert r.on_result(result(), T0 + 1) == []
    assert r.on_result(result(text_translated="changed"), T0 + 2) == []


def test_a_complete_result_replaces_an_earlier_empty_one_once() -> None:
    r = new_relay()
    assert r.on_result(result(text_asr="", extra={"reason": "ASR_EMPTY"}), T0) == []
    # Another empty one (blank text) is still a repeat: only a complete result replaces it.
    assert r.on_result(result(text_asr="  ", extra=None), T0) == []
    frames = r.on_result(result(), T0 + 1)
    assert only(frames, wire.TranslationResult).text_asr == "你好"
    assert r.on_result(result(), T0 + 2) == []


def test_dedup_memory_is_bounded_oldest_forgotten_first() -> None:
    r = new_relay(result_dedup_max=2)
    for job in ("a", "b", "c"):
        assert r.on_result(result(job_id=job), T0)
    assert r.on_result(result(job_id="c"), T0) == []
    assert r.on_result(result(job_id="b"), T0) == []
    # "a" was forgotten when "c" arrived: it is relayed again.
    assert r.on_result(result(job_id="a"), T0) != []
    assert "seen=2" in repr(r)


# -- failures --------------------------------------------------------------------------------


def test_failure_is_ui_event_error_then_error_with_the_nodes_code() -> None:
    frames = new_relay().on_result(result("job_result_model_failure"), T0)
    event, error = as_json(frames)
    assert event["event"] == "ERROR" and event["status"] == "error"
    assert event["error_code"] == "MODEL_NOT_AVAILABLE" and event["hint"]
    assert event["job_id"] == "job-7c0e..." and event["utterance_index"] == 3
    assert error == {
        "type": "error",
        "code": "MODEL_NOT_AVAILABLE",
        "message": "model missing",
        "details": {
            "service_id": "nmt-m2m100",
            "service_version": "1.0",
            "reason": "not installed",
        },
    }


def test_failure_with_a_code_outside_error_code_has_no_ui_error_code() -> None:
    event, error = as_json(new_relay().on_result(result("job_result_failure"), T0))
    assert "error_code" not in event and "hint" not in event
    assert error["code"] == "PROCESSING_ERROR"
    assert error["message"] == "DUPLICATE_UTTERANCE_INDEX: ..."


def test_failure_without_details_still_tells_the_client() -> None:
    failed = result("job_result_failure", error=None)
    frames = new_relay().on_result(failed, T0)
    assert kinds(frames) == ["ui_event:ERROR", "error"]
    assert as_json(frames)[1]["code"] == "PROCESSING_ERROR"


def test_a_repeated_failure_is_dropped() -> None:
    r = new_relay()
    assert len(r.on_result(result("job_result_failure"), T0)) == 2
    assert r.on_result(result("job_result_failure"), T0) == []


# -- the other frames ----------------------------------------------------------------------


def test_partial_frames() -> None:
    partial = wire.decode_node_message(BY_NAME["node_asr_partial"])
    assert isinstance(partial, wire.NodeAsrPartial)
    subtitle, event = as_json(relay.partial_frames(partial))
    assert subtitle == {
        "type": "asr_partial",
        "session_id": "s-..",
        "utterance_index": 3,
        "job_id": "",
        "text": "你好",
        "is_final": False,
        "trace_id": "..",
    }
    assert event["event"] == "ASR_PARTIAL" and event["job_id"] == "" and event["status"] == "ok"


def test_failure_frames() -> None:
    frames = relay.failure_frames(SID, "job-1", 0, "NO_AVAILABLE_NODE", "no node for zh:en", "t")
    event, error = as_json(frames)
    assert event == {
        "type": "ui_event",
        "trace_id": "t",
        "session_id": SID,
        "job_id": "job-1",
        "utterance_index": 0,
        "event": "ERROR",
        "status": "error",
        "error_code": "NO_AVAILABLE_NODE",
        "hint": wire.GENERIC_ERROR_HINT,
    }
    assert error == {"type": "error", "code": "NO_AVAILABLE_NODE", "message": "no node for zh:en"}


def test_dispatched_event_matches_the_reference() -> None:
    event = relay.dispatched_event("s-..", "job-..", 3, "0b7e..")
    assert orjson.loads(wire.encode(event)) == orjson.loads(BY_NAME["ui_event"])


def test_session_init_ack_matches_the_reference() -> None:
    ack = relay.session_init_ack(SID, "9f1d...")
    encoded = orjson.loads(wire.encode(ack))
    assert encoded == orjson.loads(BY_NAME["session_init_ack"])
    assert encoded["use_binary_frame"] is False and "assigned_node_id" not in encoded


def test_ui_event_builder() -> None:
    accepted = wire.ui_event(SID, "job-1", None, "NODE_ACCEPTED", "t")
    encoded = orjson.loads(wire.encode(accepted))
    assert "utterance_index" not in encoded and encoded["status"] == "ok"
    timed = wire.ui_event(SID, "job-1", 2, "NMT_DONE", "t", elapsed_ms=15)
    assert timed.elapsed_ms == 15
    with pytest.raises(ValueError, match="unknown ui_event"):
        wire.ui_event(SID, "job-1", 2, "SOMETHING", "t")


def test_frames_can_be_readdressed_for_room_members() -> None:
    # The session gateway fans a result out by replacing session_id (session_gateway.py).
    got = only(new_relay().on_result(result(), T0), wire.TranslationResult)
    other = msgspec.structs.replace(got, session_id="s-OTHER")
    assert orjson.loads(wire.encode(other))["session_id"] == "s-OTHER"


def test_error_throttle_sends_one_per_code_per_window() -> None:
    throttle = relay.ErrorThrottle(window_ms=1000)
    assert throttle.allow("NO_AVAILABLE_NODE", 0)
    assert not throttle.allow("NO_AVAILABLE_NODE", 999)  # a repeat inside the window
    assert throttle.allow("JOB_TIMEOUT", 500)  # another code is its own
    assert throttle.allow("NO_AVAILABLE_NODE", 1000)  # the window restarts at the sent one
    assert not throttle.allow("NO_AVAILABLE_NODE", 1500)
    assert all(relay.ErrorThrottle(window_ms=0).allow("X", 0) for _ in range(3))
