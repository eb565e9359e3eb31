"""``relay.job_assign``: every field the Electron node relies on (§2.3, §6.2)."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import orjson
import pytest

from scheduler import protocol as wire
from scheduler import relay
from scheduler.config import SessionConfig
from tests.protocol.examples import EXAMPLES

BY_NAME = {name: text for name, _, text in EXAMPLES}
ONE_WAY = wire.decode_client_message(BY_NAME["session_init"])
TWO_WAY = wire.decode_client_message(BY_NAME["session_init_two_way"])
FLAGS = ("is_manual_cut", "is_pause_triggered", "is_timeout_triggered", "is_max_duration_triggered")


def spec(**overrides: Any) -> relay.JobSpec:
    fields: dict[str, Any] = {
        "job_id": "job-7c0e8f2a-...",
        "session_id": "s-1A2B3C4D",
        "utterance_index": 3,
        "src_lang": "zh",
        "tgt_lang": "en",
        "init": ONE_WAY,
        "audio": b"\x03\x00abc",
        "trace_id": "0b7e...",
        "turn_id": "5d1c...",
        "reason": "silence",
        "padding_ms": 220,
    }
    fields.update(overrides)
    return relay.JobSpec(**fields)


def wire_json(message: msgspec.Struct) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(wire.encode(message))
    return decoded


def test_matches_the_reference_example() -> None:
    expected = orjson.loads(BY_NAME["job_assign"])
    expected["audio"] = base64.b64encode(b"\x03\x00abc").decode()
    assert wire_json(relay.job_assign(spec())) == expected


@pytest.mark.parametrize(
    ("reason", "flag"),
    [
        ("manual", "is_manual_cut"),
        ("silence", "is_timeout_triggered"),
        ("max_duration", "is_max_duration_triggered"),
        ("size", None),
        ("close", None),
    ],
)
def test_finalize_flag_per_reason_others_omitted(reason: str, flag: str | None) -> None:
    sent = wire_json(relay.job_assign(spec(reason=reason)))
    for name in FLAGS:
        if name == flag:
            assert sent[name] is True
        else:
            assert name not in sent, name


def test_fields_the_node_relies_on() -> None:
    audio = bytes(range(256)) * 3
    sent = wire_json(relay.job_assign(spec(audio=audio, reason="manual", padding_ms=280)))
    assert base64.b64decode(sent["audio"]) == audio
    assert sent["audio_format"] == "opus" and sent["sample_rate"] == 16000
    assert sent["attempt_id"] == 1 and sent["utterance_index"] == 3
    assert sent["session_id"] == "s-1A2B3C4D" and sent["job_id"] == "job-7c0e8f2a-..."
    assert sent["trace_id"] == "0b7e..." and sent["turn_id"] == "5d1c..."
    assert sent["padding_ms"] == 280 and sent["mode"] == "one_way"
    assert sent["enable_streaming_asr"] is True and sent["partial_update_interval_ms"] == 1000
    assert sent["features"] == {}
    assert sent["pipeline"] == {
        "use_asr": True,
        "use_nmt": True,
        "use_tts": True,
        "use_semantic": False,
        "use_tone": False,
    }
    # The browser's null dialect is omitted, as are the fields the original never sends.
    for absent in ("dialect", "lang_a", "lang_b", "auto_langs", "group_id", "part_index"):
        assert absent not in sent
    assert "context_text" not in sent


def test_two_way_session_carries_its_languages() -> None:
    sent = wire_json(relay.job_assign(spec(init=TWO_WAY, src_lang="auto", tgt_lang="en")))
    assert sent["src_lang"] == "auto" and sent["mode"] == "two_way_auto"
    assert (sent["lang_a"], sent["lang_b"], sent["auto_langs"]) == ("zh", "en", ["zh", "en"])


def test_session_features_dialect_and_streaming_choice_are_carried() -> None:
    init = msgspec.structs.replace(
        ONE_WAY,
        dialect="yue",
        features=wire.FeatureFlags(emotion_detection=True),
        enable_streaming_asr=False,
    )
    sent = wire_json(relay.job_assign(spec(init=init)))
    assert sent["dialect"] == "yue" and sent["features"] == {"emotion_detection": True}
    assert sent["enable_streaming_asr"] is False


def test_partial_interval_comes_from_config() -> None:
    config = SessionConfig(partial_update_interval_ms=250)
    assert relay.job_assign(spec(), config).partial_update_interval_ms == 250


def test_explicit_format_and_attempt_are_carried() -> None:
    sent = relay.job_assign(spec(audio_format="pcm16", sample_rate=48000, attempt_id=2))
    assert (sent.audio_format, sent.sample_rate, sent.attempt_id) == ("pcm16", 48000, 2)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"reason": "whim"}, "unknown finalize reason"),
        ({"audio": b""}, "empty audio"),
        ({"attempt_id": 0}, "attempt_id"),
    ],
)
def test_bad_specs_are_refused(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        relay.job_assign(spec(**overrides))


def test_round_trips_as_the_failover_payload_and_takes_a_new_attempt() -> None:
    # The replica stores the encoded assign and re-sends it with the next attempt (replica.py).
    assign = relay.job_assign(spec(reason="max_duration"))
    stored = wire.encode(assign).decode()
    again = msgspec.json.decode(stored, type=wire.JobAssign)
    assert again == assign
    moved = wire_json(msgspec.structs.replace(again, attempt_id=2))
    assert moved["attempt_id"] == 2 and moved["is_max_duration_triggered"] is True
    assert wire.decode_node_message(stored) == assign
