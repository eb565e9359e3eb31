"""Golden tests: every example of the reference decodes to its type and re-encodes to itself.

"Itself" allows for what the original's serde would also change: ``null`` optionals are omitted
on output, and fields unknown to the types are dropped (tests/protocol/examples.py ``DROPPED``).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import orjson
import pytest

from scheduler import protocol as wire
from tests.protocol.examples import DROPPED, EXAMPLES

EXPECTED_TYPE: dict[str, type[msgspec.Struct]] = {
    "node_register": wire.NodeRegister,
    "node_heartbeat": wire.NodeHeartbeat,
    "job_result": wire.JobResult,
    "job_result_failure": wire.JobResult,
    "job_result_model_failure": wire.JobResult,
    "job_result_empty_ack": wire.JobResult,
    "node_asr_partial": wire.NodeAsrPartial,
    "job_ack": wire.JobAck,
    "job_started": wire.JobStarted,
    "node_error": wire.NodeError,
    "node_register_ack": wire.NodeRegisterAck,
    "job_assign": wire.JobAssign,
    "job_cancel": wire.JobCancel,
    "session_init": wire.SessionInit,
    "session_init_two_way": wire.SessionInit,
    "audio_chunk": wire.AudioChunk,
    "audio_chunk_final": wire.AudioChunk,
    "client_heartbeat": wire.ClientHeartbeat,
    "tts_started": wire.TtsStarted,
    "tts_play_ended": wire.TtsPlayEnded,
    "room_create": wire.RoomCreate,
    "room_join": wire.RoomJoin,
    "webrtc_offer": wire.WebrtcOffer,
    "utterance": wire.Utterance,
    "session_close": wire.SessionClose,
    "room_leave": wire.RoomLeave,
    "room_raw_voice_preference": wire.RoomRawVoicePreference,
    "webrtc_answer": wire.WebrtcAnswer,
    "webrtc_ice": wire.WebrtcIce,
    "session_init_ack": wire.SessionInitAck,
    "translation_result": wire.TranslationResult,
    "asr_partial": wire.AsrPartial,
    "missing_result": wire.MissingResult,
    "ui_event": wire.UiEvent,
    "ui_event_error": wire.UiEvent,
    "error": wire.ErrorMessage,
    "server_heartbeat": wire.ServerHeartbeat,
    "session_close_ack": wire.SessionCloseAck,
    "room_create_ack": wire.RoomCreateAck,
    "room_members": wire.RoomMembers,
    "room_error": wire.RoomError,
    "room_expired": wire.RoomExpired,
}

IDS = [name for name, _, _ in EXAMPLES]
EXAMPLES_BY_NAME = {name: (socket, text) for name, socket, text in EXAMPLES}


def decode(socket: str, text: str) -> Any:
    if socket == "node":
        return wire.decode_node_message(text)
    return wire.decode_client_message(text)


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def expected_output(name: str, text: str) -> Any:
    expected = copy.deepcopy(orjson.loads(text))
    for path in DROPPED.get(name, []):
        node = expected
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return without_nulls(expected)


def test_every_expected_type_has_an_example() -> None:
    assert set(EXPECTED_TYPE) == set(IDS)
    tags = {cls.__struct_config__.tag for cls in EXPECTED_TYPE.values()}
    # Every message type of the catalogue is covered by at least one example.
    assert tags >= {
        "node_register", "node_heartbeat", "job_result", "asr_partial", "job_ack",
        "job_started", "node_error", "node_register_ack", "job_assign", "job_cancel",
        "session_init", "audio_chunk", "utterance", "client_heartbeat", "session_close",
        "tts_started", "tts_play_ended", "room_create", "room_join", "room_leave",
        "room_raw_voice_preference", "webrtc_offer", "webrtc_answer", "webrtc_ice",
        "session_init_ack", "translation_result", "missing_result", "ui_event", "error",
        "server_heartbeat", "session_close_ack", "room_create_ack", "room_members",
        "room_error", "room_expired",
    }  # fmt: skip


@pytest.mark.parametrize(("name", "socket", "text"), EXAMPLES, ids=IDS)
def test_example_decodes_to_its_type(name: str, socket: str, text: str) -> None:
    message = decode(socket, text)
    assert type(message) is EXPECTED_TYPE[name]


@pytest.mark.parametrize(("name", "socket", "text"), EXAMPLES, ids=IDS)
def test_example_reencodes_to_itself(name: str, socket: str, text: str) -> None:
    message = decode(socket, text)
    assert orjson.loads(wire.encode(message)) == expected_output(name, text)


@pytest.mark.parametrize(("name", "socket", "text"), EXAMPLES, ids=IDS)
def test_encoded_example_decodes_to_the_same_message(name: str, socket: str, text: str) -> None:
    message = decode(socket, text)
    assert decode(socket, wire.encode(message).decode()) == message
    # Bytes and text frames decode alike.
    assert decode(socket, text.encode()) == message


def test_decoded_fields_carry_the_example_values() -> None:
    examples = EXAMPLES_BY_NAME
    register = decode(*examples["node_register"])
    assert register.node_id is None and register.hardware.gpus[0].memory_gb == 24
    assert register.language_capabilities.asr_languages == ["en", "zh"]
    heartbeat = decode(*examples["node_heartbeat"])
    assert heartbeat.processing_metrics.service_efficiencies == {"faster-whisper-vad": 8.2}
    assert heartbeat.resource_usage.running_jobs == 1
    chunk = decode(*examples["audio_chunk_final"])
    assert chunk.is_final is True and chunk.payload == "" and chunk.seq == 18
    assign = decode(*examples["job_assign"])
    assert assign.is_timeout_triggered and not assign.is_manual_cut
    assert assign.pipeline.use_semantic is False and assign.features == wire.FeatureFlags()
    failure = decode(*examples["job_result_model_failure"])
    assert failure.error.details["service_id"] == "nmt-m2m100"
    offer = decode(*examples["webrtc_offer"])
    assert offer.sdp == {"type": "offer", "sdp": "v=0..."}
    two_way = decode(*examples["session_init_two_way"])
    assert (two_way.lang_a, two_way.lang_b, two_way.auto_langs) == ("zh", "en", ["zh", "en"])


def test_camel_case_metrics_keep_their_wire_names() -> None:
    metrics = wire.RerunMetrics(
        total_reruns=1,
        successful_reruns=2,
        failed_reruns=3,
        timeout_reruns=4,
        quality_improvements=5,
    )
    assert orjson.loads(msgspec.json.encode(metrics)) == {
        "totalReruns": 1,
        "successfulReruns": 2,
        "failedReruns": 3,
        "timeoutReruns": 4,
        "qualityImprovements": 5,
    }
    assert orjson.loads(msgspec.json.encode(wire.ASRMetrics(processing_efficiency=0.5))) == {
        "processingEfficiency": 0.5
    }


def test_job_assign_flags_are_omitted_when_false() -> None:
    assign = wire.decode_node_message(EXAMPLES_BY_NAME["job_assign"][1])
    encoded = orjson.loads(wire.encode(msgspec.structs.replace(assign, is_timeout_triggered=False)))
    for flag in (
        "is_manual_cut",
        "is_pause_triggered",
        "is_timeout_triggered",
        "is_max_duration_triggered",
    ):
        assert flag not in encoded
    # The pipeline always carries all five flags, false ones included (§2.3).
    assert encoded["pipeline"] == {
        "use_asr": True,
        "use_nmt": True,
        "use_tts": True,
        "use_semantic": False,
        "use_tone": False,
    }
