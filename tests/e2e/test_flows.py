"""End to end: real replicas, simulated Electron nodes and browsers (original-protocol.md §6)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from cross_instance.keys import RuntimeKeys
from tests.e2e.clients import SimBrowser, SimNode, is_job, opus_plan_a, wait_any
from tests.e2e.daemons import Replica
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_happy_path_on_one_replica(replicas: list[Replica], peers, pair) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    node = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    ack = await node.register()
    assert ack["status"] == "registering" and ack["node_id"].startswith("node-")
    browser = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    init = await browser.init()
    assert init["use_binary_frame"] is False and init["negotiated_codec"] == "opus"
    assert init["protocol_version"] == "1.0" and init["negotiated_sample_rate"] == 16000

    audio = opus_plan_a(10)
    await browser.chunk(audio)
    await browser.final()
    job = await node.wait_for(is_job)
    assert job["session_id"] == browser.session_id and job["utterance_index"] == 0
    assert job["attempt_id"] == 1 and job["src_lang"] == src and job["tgt_lang"] == tgt
    assert base64.b64decode(job["audio"]) == audio
    assert job["audio_format"] == "opus" and job["sample_rate"] == 16000
    assert job["is_manual_cut"] is True and "is_timeout_triggered" not in job
    assert job["enable_streaming_asr"] is True and job["turn_id"]
    assert job["pipeline"] == {
        "use_asr": True,
        "use_nmt": True,
        "use_tts": True,
        "use_semantic": False,
        "use_tone": False,
    }
    await browser.wait_type("ui_event", event="DISPATCHED", job_id=job["job_id"])

    await node.send(node.partial_for(job))
    partial = await browser.wait_type("asr_partial")
    assert partial["job_id"] == "" and partial["text"] == "你"
    result = node.result_for(job)
    del result["tts_format"]
    await node.send(result)
    got = await browser.wait_type("translation_result")
    assert got["job_id"] == job["job_id"] and got["utterance_index"] == 0
    assert got["text_asr"] == "你好" and got["text_translated"] == "Hello"
    assert got["tts_format"] == "pcm16"  # the original's default (§2.5)
    assert got["service_timings"] == {"total_ms": 1840}
    assert got["group_id"].startswith("group_") and got["part_index"] == 0

    # A repeated result is deduplicated; the next utterance gets index 1.
    await node.send(result)
    await browser.speak(10)
    job2 = await node.wait_for(lambda m: is_job(m) and m["utterance_index"] == 1)
    await node.send(node.result_for(job2))
    await browser.wait_for(
        lambda m: m.get("type") == "translation_result" and m["utterance_index"] == 1
    )
    assert len([m for m in browser.of_type("translation_result") if m["utterance_index"] == 0]) == 1


async def test_session_and_node_on_different_replicas(replicas: list[Replica], peers, pair) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    node = await peers(SimNode(replicas[1].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[2].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(10)
    job = await node.wait_for(is_job)
    await node.send(node.partial_for(job))
    await browser.wait_type("asr_partial")
    await node.send(node.result_for(job))
    got = await browser.wait_type("translation_result")
    assert got["job_id"] == job["job_id"] and got["tts_format"] == "opus"


async def test_silence_finalizes_and_max_duration_keeps_the_turn_on_one_node(
    replicas: list[Replica], peers, pair
) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    nodes = [await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt]))) for _ in range(2)]
    for node in nodes:
        await node.register()
    browser = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await browser.init()
    # 1000 ms of audio (50 Plan-A packets) reaches max_duration_ms: finalize, the turn continues.
    for _ in range(5):
        await browser.chunk(opus_plan_a(10))
    first = await _any_job(nodes, lambda m: m["utterance_index"] == 0)
    assert first["is_max_duration_triggered"] is True
    # Then silence (pause_ms = 400): the next utterance ends the turn, on the same node.
    await browser.chunk(opus_plan_a(5))
    second = await _any_job(nodes, lambda m: m["utterance_index"] == 1)
    assert second["is_timeout_triggered"] is True
    assert second["turn_id"] == first["turn_id"]
    assert second["_node"] == first["_node"]
    # A new utterance starts a new turn.
    await browser.speak(5)
    third = await _any_job(nodes, lambda m: m["utterance_index"] == 2)
    assert third["turn_id"] != first["turn_id"] and third["is_manual_cut"] is True


async def _any_job(nodes: list[SimNode], predicate) -> dict:  # type: ignore[no-untyped-def,type-arg]
    i, job = await wait_any(nodes, lambda m: is_job(m) and predicate(m))
    return {**job, "_node": i}


async def test_no_node_for_the_pair_then_a_node_joins(replicas: list[Replica], peers, pair) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    browser = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(5)
    error = await browser.wait_type("error")
    assert error["code"] == "NO_AVAILABLE_NODE"
    event = await browser.wait_type("ui_event", event="ERROR")
    assert event["error_code"] == "NO_AVAILABLE_NODE" and event["utterance_index"] == 0
    # The session keeps working once a node serves the pair.
    node = await peers(SimNode(replicas[2].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    await browser.speak(5)
    job = await node.wait_for(is_job)
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])


async def test_node_disconnect_mid_job_fails_over(replicas: list[Replica], peers, pair) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    a = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await a.register()
    browser = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(5)
    job = await a.wait_for(is_job)
    b = await peers(SimNode(replicas[2].ws + "/ws/node", ([src], [tgt])))
    await b.register()
    await a.close()
    moved = await b.wait_for(is_job)
    assert moved["job_id"] == job["job_id"] and moved["attempt_id"] == 2
    await b.send(b.result_for(moved))
    await browser.wait_type("translation_result", job_id=job["job_id"])


async def test_node_that_never_answers_times_out(replicas: list[Replica], peers, pair) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    a = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    b = await peers(SimNode(replicas[1].ws + "/ws/node", ([src], [tgt])))
    await a.register()
    await b.register()
    browser = await peers(SimBrowser(replicas[2].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(5)
    first = await _any_job([a, b], lambda m: m["attempt_id"] == 1)
    silent, other = (a, b) if first["_node"] == 0 else (b, a)
    cancel = await silent.wait_type("job_cancel", job_id=first["job_id"])
    assert cancel["reason"] == "job_timeout"
    second = await other.wait_for(lambda m: is_job(m) and m["attempt_id"] == 2)
    assert second["job_id"] == first["job_id"]
    # max_attempts = 2: the second silence ends in JOB_TIMEOUT for the client, never silence.
    error = await browser.wait_type("error", within=10)
    assert error["code"] == "JOB_TIMEOUT"
    await browser.wait_type("ui_event", event="ERROR", error_code="JOB_TIMEOUT")
    # A late result of the stale first attempt is refused: nothing reaches the client.
    await silent.send(silent.result_for(first))
    await browser.send(
        {"type": "client_heartbeat", "session_id": browser.session_id, "timestamp": 1}
    )
    await browser.wait_type("server_heartbeat")
    assert not browser.of_type("translation_result")


async def test_two_target_languages_in_a_room(replicas: list[Replica], peers, pair) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    other = "xx" if tgt != "xx" else "yy"
    n1 = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt, other])))
    n2 = await peers(SimNode(replicas[1].ws + "/ws/node", ([src], [tgt, other])))
    await n1.register()
    await n2.register()
    speaker = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await speaker.init()
    await speaker.send({"type": "room_create", "client_ts": 1, "preferred_lang": src})
    room = await speaker.wait_type("room_create_ack")
    listeners = []
    for lang, replica in ((tgt, replicas[1]), (other, replicas[2])):
        listener = await peers(SimBrowser(replica.ws + "/ws/session", lang, src))
        await listener.init()
        await listener.send(
            {
                "type": "room_join",
                "room_code": room["room_code"],
                "display_name": lang,
                "preferred_lang": lang,
            }
        )
        await listener.wait_type("room_members")
        listeners.append(listener)
    await speaker.speak(5)
    jobs = [
        await _any_job([n1, n2], lambda m, lang=lang: m["tgt_lang"] == lang)
        for lang in (tgt, other)
    ]
    # One utterance, two languages: the same (session, utterance_index) never twice on one node.
    assert jobs[0]["_node"] != jobs[1]["_node"]
    for job in jobs:
        node = (n1, n2)[job["_node"]]
        await node.send(node.result_for(job, text_translated=f"in {job['tgt_lang']}"))
    for listener, lang in zip(listeners, (tgt, other), strict=True):
        got = await listener.wait_type("translation_result")
        assert got["text_translated"] == f"in {lang}"


async def test_identity_violations_and_malformed_frames(
    replicas: list[Replica], peers, pair
) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    node = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    intruder = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await intruder.register()
    browser = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await browser.init()
    # Unparseable frames: INVALID_MESSAGE, and the socket stays usable.
    await browser.send_raw("{not json")
    assert (await browser.wait_type("error"))["code"] == "INVALID_MESSAGE"
    mark = len(browser.received)
    await browser.send({"type": "audio_chunk", "session_id": browser.session_id})
    await browser.wait_for(is_error("INVALID_MESSAGE"), start=mark)
    # A session id that is not this socket's: INVALID_SESSION.
    mark = len(browser.received)
    await browser.send(
        {
            "type": "audio_chunk",
            "session_id": "s-NOTMINE",
            "seq": 1,
            "is_final": True,
            "payload": "",
        }
    )
    await browser.wait_for(is_error("INVALID_SESSION"), start=mark)
    # Invalid base64: an error, not silent empty audio.
    mark = len(browser.received)
    await browser.send(
        {
            "type": "audio_chunk",
            "session_id": browser.session_id,
            "seq": 2,
            "is_final": False,
            "payload": "###",
        }
    )
    assert "base64" in (await browser.wait_for(is_error("INVALID_MESSAGE"), start=mark))["message"]
    # A result from a node that does not hold the job is refused.
    await browser.speak(5)
    job = await node.wait_for(is_job)
    forged = node.result_for(job, text_translated="forged")
    forged["node_id"] = intruder.node_id
    await intruder.send(forged)
    await intruder.send({**node.result_for(job, text_translated="forged"), "node_id": node.node_id})
    await node.send(node.result_for(job))
    got = await browser.wait_type("translation_result")
    assert got["text_translated"] == "Hello"
    await browser.send(
        {"type": "client_heartbeat", "session_id": browser.session_id, "timestamp": 1}
    )
    await browser.wait_type("server_heartbeat")
    assert [m["text_translated"] for m in browser.of_type("translation_result")] == ["Hello"]
    assert orjson.dumps(got)  # well-formed


async def test_http_routes(replicas: list[Replica]) -> None:
    replica = replicas[0]
    assert replica.get("/health") == (200, b"OK\n")
    assert replica.get("/readyz")[0] == 200
    status, body = replica.get("/metrics")
    assert status == 200 and b"lingua_" in body
    status, body = replica.get("/api/v1/cluster")
    cluster = orjson.loads(body)
    assert status == 200 and {r["instance_id"] for r in cluster["replicas"]} >= {"r0", "r1", "r2"}
    assert replica.get("/nope")[0] == 404


def is_error(code: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == "error" and m.get("code") == code


async def test_a_result_for_a_closed_browser_is_dropped_not_dead_lettered(
    replicas: list[Replica], peers, pair, redis_url: str, cluster_prefix: str
) -> None:  # type: ignore[no-untyped-def]
    """Closing the tab mid-job is ordinary: no DLQ entry, no alert, a counter."""
    src, tgt = pair
    node = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(5)
    job = await node.wait_for(is_job)
    dropped_before = _metric(replicas[0], "lingua_runtime_dropped_total")
    depth_before = orjson.loads(replicas[0].get("/api/v1/cluster")[1])["dlq"]["depth"]
    await browser.close()
    # The session's replica releases it (another process): wait for that in Redis.
    owners = RuntimeKeys(cluster_prefix).rt("session_owner")
    client = Redis.from_url(redis_url)
    try:
        await until(lambda: _not(client.hexists(owners, browser.session_id)))
    finally:
        await client.aclose()
    await node.send(node.result_for(job))
    await until(lambda: _metric(replicas[0], "lingua_runtime_dropped_total") > dropped_before)
    assert orjson.loads(replicas[0].get("/api/v1/cluster")[1])["dlq"]["depth"] == depth_before


async def _not(value: Awaitable[Any]) -> bool:
    return not await value


def _metric(replica: Replica, name: str) -> float:
    body = replica.get("/metrics")[1].decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name))
