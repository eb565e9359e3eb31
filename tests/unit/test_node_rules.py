"""The node gateway's decisions without I/O (``scheduler.node_rules``)."""

from __future__ import annotations

from typing import Any

import orjson

from scheduler import node_rules
from scheduler import protocol as wire
from tests.e2e.clients import SimNode


def decoded(message: dict[str, Any]) -> Any:
    return wire.decode_node_message(orjson.dumps(message))


def register(node_id: str | None = "node-AAAA", **changes: Any) -> wire.NodeRegister:
    message = SimNode("ws://unused", (["zh"], ["en"]), node_id=node_id).register_message()
    message.update(changes)
    result = decoded({k: v for k, v in message.items() if v is not ...})
    assert isinstance(result, wire.NodeRegister)
    return result


def test_a_register_is_always_routed_to_registration() -> None:
    assert node_rules.route(register(), None) == "register"
    assert node_rules.route(register(), "node-OTHER") == "register"


def test_frames_before_a_register_are_ignored() -> None:
    heartbeat = decoded(SimNode("ws://unused", node_id="node-AAAA").heartbeat_message())
    assert node_rules.route(heartbeat, None) == "ignore"


def test_a_frame_naming_another_node_is_foreign() -> None:
    heartbeat = decoded(SimNode("ws://unused", node_id="node-BBBB").heartbeat_message())
    assert node_rules.route(heartbeat, "node-AAAA") == "foreign"
    assert node_rules.route(heartbeat, "node-BBBB") == "handle"


def test_a_node_without_an_id_gets_one() -> None:
    decision = node_rules.registration(register(node_id=None), None)
    assert isinstance(decision, node_rules.Proceed)
    assert decision.node_id.startswith("node-") and len(decision.node_id) == len("node-") + 8
    assert decision.caps.asr == ["zh"] and decision.caps.tts == ["en"]


def test_one_socket_serves_one_node() -> None:
    decision = node_rules.registration(register("node-BBBB"), "node-AAAA")
    assert decision == node_rules.Refuse("node-BBBB", "another_node")
    assert isinstance(
        node_rules.registration(register("node-AAAA"), "node-AAAA"), node_rules.Proceed
    )


def test_a_register_without_languages_is_refused() -> None:
    decision = node_rules.registration(register(language_capabilities=...), None)
    assert decision == node_rules.Refuse("node-AAAA", "no_capabilities")


def test_a_heartbeat_keeps_the_registered_hardware() -> None:
    registered = node_rules.node_capabilities(register())
    assert registered is not None and registered.hardware
    heartbeat = decoded(
        SimNode("ws://unused", (["zh", "ja"], ["en"]), node_id="node-AAAA").heartbeat_message()
    )
    caps = node_rules.heartbeat_capabilities(heartbeat, registered)
    assert caps is not None and caps.asr == ["zh", "ja"] and caps.hardware == registered.hardware
    bare_message = SimNode("ws://unused", node_id="node-AAAA").heartbeat_message()
    del bare_message["language_capabilities"]
    bare = decoded(bare_message)
    assert node_rules.heartbeat_capabilities(bare, registered) is None


def test_a_heartbeat_without_slots_keeps_the_registered_slots() -> None:
    registered = node_rules.node_capabilities(register(max_concurrent_jobs=8))
    assert registered is not None and registered.max_concurrent_jobs == 8
    node = SimNode("ws://unused", node_id="node-AAAA")
    caps = node_rules.heartbeat_capabilities(decoded(node.heartbeat_message()), registered)
    assert caps is not None and caps.max_concurrent_jobs == 8
    named = decoded(node.heartbeat_message() | {"max_concurrent_jobs": 2})
    changed = node_rules.heartbeat_capabilities(named, registered)
    assert changed is not None and changed.max_concurrent_jobs == 2


def test_only_a_heartbeat_reporting_no_running_job_says_the_node_runs_none() -> None:
    node = SimNode("ws://unused", node_id="node-AAAA")
    assert node_rules.runs_no_job(decoded(node.heartbeat_message(running_jobs=0)))
    assert not node_rules.runs_no_job(decoded(node.heartbeat_message(running_jobs=1)))
