"""``node_capabilities`` and the frames the real clients send (§2.2, §4.2, §6)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from scheduler import protocol as wire
from scheduler.node_rules import node_capabilities
from scheduler.scheduling.types import NodeCapabilities
from tests.e2e.clients import SimNode
from tests.protocol.examples import EXAMPLES

BY_NAME = {name: text for name, _, text in EXAMPLES}


def node_message(message: dict[str, Any]) -> Any:
    return wire.decode_node_message(orjson.dumps(message))


def test_register_capabilities_with_hardware() -> None:
    register = wire.decode_node_message(BY_NAME["node_register"])
    assert isinstance(register, wire.NodeRegister)
    assert node_capabilities(register) == NodeCapabilities(
        asr=["en", "zh"],
        semantic=["en", "zh"],
        tts=["en", "zh"],
        max_concurrent_jobs=None,
        hardware={
            "cpu_cores": 16,
            "memory_gb": 32,
            "gpus": [{"name": "RTX 4090", "memory_gb": 24}],
        },
    )


def test_heartbeat_capabilities_carry_languages_only() -> None:
    heartbeat = wire.decode_node_message(BY_NAME["node_heartbeat"])
    assert isinstance(heartbeat, wire.NodeHeartbeat)
    caps = node_capabilities(heartbeat)
    assert caps is not None and caps.asr == ["en", "zh"] and caps.semantic == ["en", "zh"]
    assert caps.hardware == {} and caps.max_concurrent_jobs is None


@pytest.mark.parametrize("name", ["node_register", "node_heartbeat"])
def test_no_language_capabilities_means_none(name: str) -> None:
    message = orjson.loads(BY_NAME[name])
    for absent in (None, "drop"):
        if absent == "drop":
            message.pop("language_capabilities")
        else:
            message["language_capabilities"] = absent
        assert node_capabilities(node_message(message)) is None


def test_missing_or_null_language_lists_are_empty() -> None:
    message = orjson.loads(BY_NAME["node_heartbeat"])
    message["language_capabilities"] = {"asr_languages": ["zh"], "semantic_languages": None}
    caps = node_capabilities(node_message(message))
    assert caps == NodeCapabilities(asr=["zh"], semantic=[], tts=[], hardware={})


def test_max_concurrent_jobs_extension_is_carried() -> None:
    message = {**orjson.loads(BY_NAME["node_register"]), "max_concurrent_jobs": 3}
    caps = node_capabilities(node_message(message))
    assert caps is not None and caps.max_concurrent_jobs == 3
    with pytest.raises(wire.ProtocolError, match="max_concurrent_jobs"):
        node_message({**message, "max_concurrent_jobs": -1})


def test_the_simulated_electron_node_frames_decode() -> None:
    node = SimNode("ws://unused", (["zh"], ["en"]))
    register = node_message(node.register_message())
    assert isinstance(register, wire.NodeRegister) and register.node_id is None
    node.node_id = "node-3F2A9C1B"
    heartbeat = node_message(node.heartbeat_message(running_jobs=2))
    assert isinstance(heartbeat, wire.NodeHeartbeat)
    assert heartbeat.resource_usage.running_jobs == 2
    job = {"job_id": "job-1", "attempt_id": 1, "session_id": "s-1", "utterance_index": 0}
    job["trace_id"] = "t"
    result = node_message(node.result_for(job))
    assert isinstance(result, wire.JobResult) and result.node_id == "node-3F2A9C1B"
    partial = node_message(node.partial_for(job))
    assert isinstance(partial, wire.NodeAsrPartial) and partial.text == "你"
