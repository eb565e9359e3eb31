"""Tolerance and strictness, as the original's serde (§2 conventions), derived from the examples.

Unknown fields are ignored; ``null`` and absence are the same for optional fields; a missing
required field, a wrong JSON type, an unknown ``type`` or a non-object fails the whole frame with
a :class:`ProtocolError`, and nothing else is ever raised.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from scheduler import protocol as wire
from tests.protocol.examples import EXAMPLES

IDS = [name for name, _, _ in EXAMPLES]
BY_NAME = {name: (socket, text) for name, socket, text in EXAMPLES}


def decode(socket: str, message: dict[str, Any]) -> Any:
    text = orjson.dumps(message)
    if socket == "node":
        return wire.decode_node_message(text)
    return wire.decode_client_message(text)


def fields_of(message: Any) -> list[msgspec.inspect.Field]:
    info = msgspec.inspect.type_info(type(message))
    assert isinstance(info, msgspec.inspect.StructType)
    return list(info.fields)


def is_any(field: msgspec.inspect.Field) -> bool:
    kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else [field.type]
    return any(isinstance(k, msgspec.inspect.AnyType) for k in kinds)


# -- unknown fields ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "socket", "text"), EXAMPLES, ids=IDS)
def test_unknown_fields_are_ignored(name: str, socket: str, text: str) -> None:
    plain = orjson.loads(text)
    noisy = {**plain, "zz_unknown": {"nested": [1, 2]}, "gpu_queue_length": 3}
    assert decode(socket, noisy) == decode(socket, plain)


def test_unknown_nested_fields_are_ignored_and_not_relayed() -> None:
    socket, text = BY_NAME["job_result"]
    message = orjson.loads(text)
    message["extra"].update(pendingEmptyJobs=[{"job_id": "j"}], audioBuffered=True)
    message["segments_meta"]["zz"] = 1
    result = decode(socket, message)
    assert result.extra == wire.ExtraResult(language_probability=0.98)
    assert "pendingEmptyJobs" not in orjson.loads(wire.encode(result))["extra"]


# -- optional fields: null or absent -------------------------------------------------------


@pytest.mark.parametrize(("name", "socket", "text"), EXAMPLES, ids=IDS)
def test_null_is_accepted_for_every_optional_field(name: str, socket: str, text: str) -> None:
    plain = orjson.loads(text)
    message = decode(socket, plain)
    optional = [f for f in fields_of(message) if f.default is None]
    for field in optional:
        nulled = decode(socket, {**plain, field.encode_name: None})
        assert getattr(nulled, field.name) is None, field.name


@pytest.mark.parametrize(("name", "socket", "text"), EXAMPLES, ids=IDS)
def test_every_optional_field_may_be_absent(name: str, socket: str, text: str) -> None:
    plain = orjson.loads(text)
    message = decode(socket, plain)
    optional = {f.encode_name for f in fields_of(message) if not f.required}
    minimal = {k: v for k, v in plain.items() if k not in optional}
    reduced = decode(socket, minimal)
    for field in fields_of(message):
        if not field.required:
            assert getattr(reduced, field.name) == field.default, field.name


# -- required fields and types ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "socket", "text"), EXAMPLES, ids=IDS)
def test_each_required_field_is_required(name: str, socket: str, text: str) -> None:
    plain = orjson.loads(text)
    message = decode(socket, plain)
    required = [f.encode_name for f in fields_of(message) if f.required]
    assert required, "every message has a required field"
    for key in required:
        missing = {k: v for k, v in plain.items() if k != key}
        with pytest.raises(wire.ProtocolError, match=key):
            decode(socket, missing)


def _wrong_type(value: Any) -> Any:
    if value is None:
        return [1]  # no field of any message accepts a list holding a number
    return 12345 if isinstance(value, str) else "not-the-right-type"


@pytest.mark.parametrize(("name", "socket", "text"), EXAMPLES, ids=IDS)
def test_a_wrong_json_type_fails_the_frame(name: str, socket: str, text: str) -> None:
    plain = orjson.loads(text)
    message = decode(socket, plain)
    for field in fields_of(message):
        if is_any(field) or field.encode_name not in plain:
            continue  # opaque JSON (sdp, candidate, details) takes any value
        broken = {**plain, field.encode_name: _wrong_type(plain[field.encode_name])}
        with pytest.raises(wire.ProtocolError, match=field.encode_name):
            decode(socket, broken)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("audio_chunk", "seq", -1),
        ("audio_chunk", "seq", "17"),
        ("audio_chunk", "is_final", "true"),
        ("audio_chunk", "is_final", 1),
        ("job_result", "utterance_index", -3),
        ("job_result", "attempt_id", 1.5),
        ("tts_play_ended", "ts_end_ms", -1),
        ("ui_event", "event", "SOMETHING_ELSE"),
        ("ui_event", "status", "maybe"),
        ("node_heartbeat", "resource_usage", {"cpu_percent": 1.0}),
        ("job_assign", "pipeline", {"use_asr": True}),
    ],
)
def test_specific_invalid_values_fail(name: str, key: str, value: Any) -> None:
    socket, text = BY_NAME[name]
    with pytest.raises(wire.ProtocolError):
        decode(socket, {**orjson.loads(text), key: value})


def test_null_for_a_required_field_fails() -> None:
    socket, text = BY_NAME["audio_chunk"]
    with pytest.raises(wire.ProtocolError, match="session_id"):
        decode(socket, {**orjson.loads(text), "session_id": None})


# -- where we are more tolerant than the original (§7.15) ---------------------------------------


def test_node_fields_nobody_reads_accept_floats_and_unknown_enum_values() -> None:
    socket, text = BY_NAME["node_register"]
    message = orjson.loads(text)
    message["hardware"] = {
        "cpu_cores": 16,
        "memory_gb": 31.7,
        "gpus": [{"name": "X", "memory_gb": 7.5}],
    }
    message["installed_services"][0].update(type="diarization", status="warming", device="npu")
    message["capability_by_type"] = [{"type": "diarization", "ready": False, "reason": "x"}]
    register = decode(socket, message)
    assert register.hardware.memory_gb == 31.7
    assert register.installed_services[0].type == "diarization"


def test_server_to_client_types_sent_by_a_client_parse_and_node_commands_too() -> None:
    # The gateways ignore them, like the original (§2.4, §2.2); they are not protocol errors.
    socket, text = BY_NAME["translation_result"]
    assert isinstance(decode(socket, orjson.loads(text)), wire.TranslationResult)
    socket, text = BY_NAME["job_assign"]
    assert isinstance(decode(socket, orjson.loads(text)), wire.JobAssign)
    control = wire.decode_node_message(b'{"type":"node_control","command":"drain"}')
    assert control == wire.NodeControl(command="drain")
    error = wire.decode_node_message(b'{"type":"error","code":"X","message":"y"}')
    assert isinstance(error, wire.ErrorMessage)


def test_the_two_sockets_do_not_share_types() -> None:
    with pytest.raises(wire.ProtocolError, match="node_register"):
        wire.decode_client_message(BY_NAME["node_register"][1])
    with pytest.raises(wire.ProtocolError, match="session_init"):
        wire.decode_node_message(BY_NAME["session_init"][1])
    # Same tag, different shape per socket: asr_partial from a node names its node.
    node_partial = wire.decode_node_message(BY_NAME["node_asr_partial"][1])
    assert isinstance(node_partial, wire.NodeAsrPartial) and node_partial.node_id == "node-.."
    assert isinstance(wire.decode_client_message(BY_NAME["asr_partial"][1]), wire.AsrPartial)


# -- garbage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "",
        "   ",
        "{not json",
        "null",
        "42",
        '"session_init"',
        "[]",
        '[{"type":"session_init"}]',
        "{}",
        '{"type":null}',
        '{"type":7}',
        '{"type":"no_such_type"}',
        '{"type":"session_init"}',
        '{"type":"audio_chunk","session_id":"s","seq":1,"is_final":false} trailing',
        b"\xff\xfe\x00",
        b'{"type":"audio_chunk","session_id":"\xff","seq":1,"is_final":true}',
        '{"type":"audio_chunk","session_id":"\\ud800","seq":1,"is_final":true}',
        "[" * 5000 + "]" * 5000,
        '{"a":' * 5000 + "1" + "}" * 5000,
    ],
)
@pytest.mark.parametrize("decoder", [wire.decode_client_message, wire.decode_node_message])
def test_garbage_raises_protocol_error_only(frame: str | bytes, decoder: Any) -> None:
    with pytest.raises(wire.ProtocolError):
        decoder(frame)


def test_protocol_error_is_a_value_error_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="no_such_type"):
        wire.decode_client_message('{"type":"no_such_type"}')
    with pytest.raises(wire.ProtocolError, match="not JSON"):
        wire.decode_client_message("{not json")
    with pytest.raises(wire.ProtocolError, match="text or bytes"):
        wire.decode_client_message(42)  # type: ignore[arg-type]


def test_decode_as_accepts_only_the_named_type() -> None:
    text = BY_NAME["job_result"][1]
    assert isinstance(wire.decode_as(text, wire.JobResult), wire.JobResult)
    with pytest.raises(wire.ProtocolError):
        wire.decode_as(BY_NAME["node_asr_partial"][1], wire.JobResult)
    with pytest.raises(wire.ProtocolError):
        wire.decode_as("{", wire.JobResult)
