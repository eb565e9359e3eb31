"""End to end: the guarantees issue 4 adds over the original (original-protocol.md §7).

Each test drives real ``serve`` replicas with the simulated clients of ``tests/e2e/clients.py`` and
asserts something the original got wrong: a re-initialised socket leaks nothing, a quiet session
never goes deaf, every finalized utterance ends in a result or an explicit error, identities are
bound to sockets, buffers are bounded, disconnects clean up, rooms and relays work across
replicas, and a draining replica stops being ready.

Absence is asserted only behind a causal marker: a later frame that travels the same path as the
one that must not arrive (same socket, same replica, same inbox), so waiting for the marker proves
the earlier frame would have been seen.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis

from cross_instance.keys import RuntimeKeys
from scheduler.scheduling.keys import SchedulingKeys
from tests.e2e.clients import SimBrowser, SimNode, is_job, opus_plan_a, wait_any
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

Message = dict[str, Any]
Peers = Callable[[Any], Awaitable[Any]]

# The default session.max_utterance_bytes (500 KiB) and server.max_frame_bytes (2 MiB).
MAX_UTTERANCE_BYTES = 500 * 1024
MAX_FRAME_BYTES = 2 * 1024 * 1024


# -- helpers ---------------------------------------------------------------------------------


def job_of(index: int, session_id: str | None = None) -> Callable[[Message], bool]:
    return lambda m: (
        is_job(m)
        and m["utterance_index"] == index
        and (session_id is None or m["session_id"] == session_id)
    )


def is_error(code: str) -> Callable[[Message], bool]:
    return lambda m: m.get("type") == "error" and m.get("code") == code


def is_type(kind: str, **fields: Any) -> Callable[[Message], bool]:
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


def mark(peer: Any) -> int:
    """Index of the next frame ``peer`` receives: waits from here ignore earlier frames."""
    return len(peer.received)


async def heartbeat_round_trip(browser: SimBrowser) -> None:
    """A causal marker on the browser's own socket: everything its replica sent before is in."""
    start = mark(browser)
    await browser.send(
        {"type": "client_heartbeat", "session_id": browser.session_id, "timestamp": 1}
    )
    await browser.wait_for(is_type("server_heartbeat", session_id=browser.session_id), start=start)


async def reinit(browser: SimBrowser) -> str:
    """A further ``session_init`` on the same socket, as the browser sends it; the new id.

    ``SimBrowser.init`` would return the first ack again: this waits past it."""
    start = mark(browser)
    await browser.send(
        {"type": "session_init", "client_version": "web-client-v1.0", "platform": "web",
         "src_lang": browser.src, "tgt_lang": browser.tgt, "dialect": None, "features": {},
         "pairing_code": None, "mode": "one_way", "trace_id": secrets.token_hex(16),
         "tenant_id": None}
    )  # fmt: skip
    ack = await browser.wait_for(is_type("session_init_ack"), start=start)
    browser.session_id = ack["session_id"]
    return str(ack["session_id"])


async def owners(redis_url: str, prefix: str, kind: str) -> dict[str, str]:
    """The runtime's owner map (id -> "instance@epoch") for ``kind`` (node or session)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = await client.hgetall(RuntimeKeys(prefix).owners(kind))
        return {str(k): str(v) for k, v in raw.items()}
    finally:
        await client.aclose()


async def has_affinity(redis_url: str, prefix: str, session_id: str) -> bool:
    """Whether the scheduling core still holds the session's node and turn affinity (an ended
    session keeps only its `ended` mark, which holds none)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = await client.hget(SchedulingKeys(prefix, "d0").key("sessions"), session_id)
        return raw is not None and "ended" not in orjson.loads(raw)
    finally:
        await client.aclose()


def metric(replica: Replica, name: str, **labels: str) -> float:
    """Sum of ``name`` samples whose labels include ``labels`` (Prometheus text)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in replica.get("/metrics")[1].decode().splitlines():
        if line.startswith(name) and all(w in line for w in want):
            total += float(line.split()[-1])
    return total


def cluster_node_ids(replica: Replica) -> set[str]:
    return {n["node_id"] for n in orjson.loads(replica.get("/api/v1/cluster")[1])["nodes"]}


@pytest.fixture(scope="module")
def patient(redis_url: str, cluster_prefix: str) -> Iterator[Replica]:
    """One replica whose job timeout (60 s) is far beyond any wait here: a job that moves within
    a test's waits moved because its node went offline, not because it timed out. Its own key
    prefix keeps its timeout out of the shared replicas' sweeps."""
    replica = Replica(
        redis_url,
        "patient",
        f"{cluster_prefix}p",
        {**FAST_SETTINGS, "LINGUA_SCHEDULING__JOB_TIMEOUT_MS": "60000"},
    ).start()
    try:
        yield replica
    finally:
        replica.stop()


# -- one socket, one session -----------------------------------------------------------------


async def test_a_second_session_init_ends_the_first_session(
    replicas: list[Replica],
    peers: Peers,
    pair: tuple[str, str],
    redis_url: str,
    cluster_prefix: str,
) -> None:
    src, tgt = pair
    node = await peers(SimNode(replicas[1].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await browser.init()
    first = browser.session_id
    assert (await owners(redis_url, cluster_prefix, "session")).get(first, "").startswith("r0@")
    await browser.speak(5)
    job1 = await node.wait_for(job_of(0, first))
    # Audio buffered in the first session (its silence timer armed), then a new session_init.
    await browser.chunk(opus_plan_a(5))
    second = await reinit(browser)
    assert second != first

    # The first session's ownership and node affinity are released, the second is owned here.
    session_owners = await owners(redis_url, cluster_prefix, "session")
    assert first not in session_owners
    assert not await has_affinity(redis_url, cluster_prefix, first)
    assert session_owners.get(second, "").startswith("r0@")
    # Its id is no longer this socket's.
    start = mark(browser)
    await browser.send(
        {"type": "audio_chunk", "session_id": first, "seq": 99, "is_final": True, "payload": ""}
    )
    await browser.wait_for(is_error("INVALID_SESSION"), start=start)

    # A late result of the first session's job reaches nobody.
    await node.send(node.result_for(job1, text_translated="stale"))
    # The new session works: its silence cut is index 0 of its own.
    await browser.chunk(opus_plan_a(5))
    job2 = await node.wait_for(job_of(0, second))
    assert job2["is_timeout_triggered"] is True
    # The first session's buffered audio was armed earlier than this silence cut: had its timer
    # survived, its job would have reached the node before job2 (same replicas, same order).
    assert not [m for m in node.of_type("job_assign") if m["session_id"] == first][1:]
    await node.send(node.result_for(job2))
    got = await browser.wait_for(is_type("translation_result", job_id=job2["job_id"]))
    assert got["session_id"] == second and got["utterance_index"] == 0
    assert [m["job_id"] for m in browser.of_type("translation_result")] == [job2["job_id"]]


async def test_a_quiet_session_never_goes_deaf(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    node = await peers(SimNode(replicas[2].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await browser.init()
    # Speech, then silence: the silence cut (pause_ms = 400).
    await browser.chunk(opus_plan_a(10))
    job0 = await node.wait_for(job_of(0))
    assert job0["is_timeout_triggered"] is True
    await node.send(node.result_for(job0))
    result0 = await browser.wait_type("translation_result", job_id=job0["job_id"])
    # The client plays the result's TTS, as the browser does.
    for kind, stamp in (("tts_started", "ts_start_ms"), ("tts_play_ended", "ts_end_ms")):
        await browser.send(
            {
                "type": kind,
                "session_id": browser.session_id,
                "trace_id": result0["trace_id"],
                "group_id": result0["group_id"],
                stamp: 1767225602000,
            }
        )
    # A quiet gap several times pause_ms (the original's session actor exited when idle and the
    # session went deaf while its socket lived): the passing time is the condition under test.
    await anyio.sleep(4 * 0.4)
    await heartbeat_round_trip(browser)
    assert len(node.of_type("job_assign")) == 1  # the quiet gap dispatched nothing
    # Speech again: the next index, a new turn, and its result arrives.
    start = mark(browser)
    await browser.chunk(opus_plan_a(10))
    job1 = await node.wait_for(job_of(1))
    assert job1["is_timeout_triggered"] is True and job1["turn_id"] != job0["turn_id"]
    await node.send(node.result_for(job1, text_translated="again"))
    got = await browser.wait_for(is_type("translation_result", job_id=job1["job_id"]), start=start)
    assert got["utterance_index"] == 1 and got["text_translated"] == "again"


async def test_every_finalized_utterance_ends_in_a_result_or_an_error(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    node = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await browser.init()
    jobs: dict[int, Message] = {}
    for index in range(3):
        await browser.speak(5)
        jobs[index] = await node.wait_for(job_of(index))
        if index != 1:  # the node answers utterances 0 and 2, never 1
            await node.send(node.result_for(jobs[index], text_translated=f"r{index}"))
    for index in (0, 2):
        await browser.wait_type("translation_result", job_id=jobs[index]["job_id"])
    # Utterance 1: job_timeout_ms = 1500, no other node (the node refuses a second job for the
    # same utterance): the node is told to drop it and the client gets an explicit error.
    cancel = await node.wait_type("job_cancel", job_id=jobs[1]["job_id"])
    assert cancel["reason"] == "job_timeout"
    event = await browser.wait_for(
        lambda m: is_type("ui_event", event="ERROR")(m) and m["utterance_index"] == 1
    )
    assert event["error_code"] == "JOB_TIMEOUT" and event["job_id"] == jobs[1]["job_id"]
    assert (await browser.wait_for(is_error("JOB_TIMEOUT")))["message"]
    outcomes = {
        m["utterance_index"]
        for m in browser.received
        if m.get("type") == "translation_result"
        or (m.get("type") == "ui_event" and m.get("event") == "ERROR")
    }
    assert outcomes == {0, 1, 2}
    # The session still works afterwards.
    await browser.speak(5)
    job3 = await node.wait_for(job_of(3))
    await node.send(node.result_for(job3))
    await browser.wait_type("translation_result", job_id=job3["job_id"])


# -- partials, cancels and identity across replicas -------------------------------------------


async def test_partials_follow_the_job_holder_across_replicas_and_timeouts(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    """Nodes on r0 and r1, the session on r2: the timed-out node is cancelled across replicas,
    and once the job moved, its partials are refused and the new holder's pass. A late result
    of the old attempt still wins while the job has none (the new holder is cancelled); after
    it, the new holder's result is refused."""
    src, tgt = pair
    nodes = [await peers(SimNode(r.ws + "/ws/node", ([src], [tgt]))) for r in replicas[:2]]
    for node in nodes:
        await node.register()
    browser = await peers(SimBrowser(replicas[2].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(5)
    first_index, first = await wait_any(nodes, lambda m: is_job(m) and m["attempt_id"] == 1)
    silent, holder = nodes[first_index], nodes[1 - first_index]
    # While it holds the job, the first node's partial crosses replicas to the session.
    await silent.send(silent.partial_for(first, text="early"))
    partial = await browser.wait_type("asr_partial", text="early")
    assert partial["utterance_index"] == 0 and partial["job_id"] == ""
    await browser.wait_for(is_type("ui_event", event="ASR_PARTIAL"))
    # It never answers: job_cancel reaches it (from whichever replica swept), the job moves.
    cancel = await silent.wait_type("job_cancel", job_id=first["job_id"])
    assert cancel["reason"] == "job_timeout" and cancel["trace_id"] == first["trace_id"]
    moved = await holder.wait_for(lambda m: is_job(m) and m["attempt_id"] == 2)
    assert moved["job_id"] == first["job_id"] and moved["turn_id"] == first["turn_id"]
    # The old node's partial is refused, the new holder's passes.
    await silent.send(silent.partial_for(first, text="stale"))
    await holder.send(holder.partial_for(moved, text="fresh"))
    await browser.wait_type("asr_partial", text="fresh")
    # The old attempt's result comes after all: the job has none yet, so it wins; the new
    # holder is told to stop, and its own result is refused.
    await silent.send(silent.result_for(first, text_translated="late"))
    got = await browser.wait_type("translation_result", job_id=first["job_id"])
    assert got["text_translated"] == "late"
    cancelled = await holder.wait_type("job_cancel", job_id=first["job_id"])
    assert cancelled["reason"] == "result_received"
    holder_replica = replicas[1 - first_index]
    refused = metric(holder_replica, "lingua_jobs_total", event="result_refused")
    await holder.send(holder.result_for(moved, text_translated="fresh"))
    await until(
        lambda: metric(holder_replica, "lingua_jobs_total", event="result_refused") > refused
    )
    await browser.send(
        {"type": "client_heartbeat", "session_id": browser.session_id, "timestamp": 1}
    )
    await browser.wait_type("server_heartbeat")
    assert [m["text"] for m in browser.of_type("asr_partial")] == ["early", "fresh"]
    assert len(browser.of_type("translation_result")) == 1


async def test_a_node_cannot_send_results_or_partials_into_another_session(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    """A node holding a job of session A names session B in its partial and result: B must get
    nothing (§7.13: the original let job_result/asr_partial target any session id)."""
    src, tgt = pair
    node = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    victim = await peers(SimBrowser(replicas[2].ws + "/ws/session", src, tgt))
    await victim.init()
    speaker = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await speaker.init()
    await speaker.speak(5)
    job = await node.wait_for(job_of(0, speaker.session_id))
    forged_partial = {**node.partial_for(job, text="forged"), "session_id": victim.session_id}
    forged_result = {
        **node.result_for(job, text_translated="forged"),
        "session_id": victim.session_id,
    }
    await node.send(forged_partial)
    await node.send(forged_result)
    # The marker: the victim's own job, answered afterwards on the same node socket, reaches the
    # victim through the same replicas; anything forged would be in before it.
    await victim.speak(5)
    own = await node.wait_for(job_of(0, victim.session_id))
    await node.send(node.result_for(own, text_translated="own"))
    await victim.wait_type("translation_result", job_id=own["job_id"])
    leaked = [
        (m["type"], m.get("text") or m.get("text_translated"))
        for m in victim.received
        if m.get("type") in ("asr_partial", "translation_result")
        and m.get("job_id") != own["job_id"]
    ]
    assert not leaked, f"another session's job reached the victim: {leaked}"


async def test_messages_naming_another_session_are_refused_and_change_nothing(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    node = await peers(SimNode(replicas[2].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    intruder = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await intruder.init()
    victim = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await victim.init()
    other = victim.session_id
    # The victim has audio buffered: a foreign session_close must not flush or close it.
    await victim.chunk(opus_plan_a(5))
    foreign: list[Message] = [
        {"type": "session_close", "session_id": other, "reason": "user"},
        {"type": "client_heartbeat", "session_id": other, "timestamp": 1},
        {"type": "tts_started", "session_id": other, "trace_id": "t", "group_id": "g",
         "ts_start_ms": 1},
        {"type": "tts_play_ended", "session_id": other, "trace_id": "t", "group_id": "g",
         "ts_end_ms": 2},
        {"type": "audio_chunk", "session_id": other, "seq": 1, "is_final": True,
         "payload": base64.b64encode(opus_plan_a(5)).decode()},
        {"type": "utterance", "session_id": other, "utterance_index": 0, "manual_cut": True,
         "src_lang": src, "tgt_lang": tgt, "dialect": None,
         "audio": base64.b64encode(opus_plan_a(5)).decode(), "audio_format": "opus",
         "sample_rate": 16000, "trace_id": "t"},
    ]  # fmt: skip
    start = mark(intruder)
    for message in foreign:
        await intruder.send(message)
    await heartbeat_round_trip(intruder)
    refusals = [m for m in intruder.received[start:] if m.get("type") == "error"]
    assert [m["code"] for m in refusals] == ["INVALID_SESSION"] * len(foreign)
    assert not [
        m
        for m in intruder.received[start:]
        if m.get("type") in ("session_close_ack", "server_heartbeat")
        and m.get("session_id") == other
    ]
    # The victim's session is untouched: its buffered audio is cut by silence (not by the
    # foreign close or is_final), as utterance 0, and it still gets its result.
    job = await node.wait_for(job_of(0, other))
    assert job["is_timeout_triggered"] is True and "is_manual_cut" not in job
    assert base64.b64decode(job["audio"]) == opus_plan_a(5)
    await node.send(node.result_for(job))
    await victim.wait_type("translation_result", job_id=job["job_id"])
    await heartbeat_round_trip(victim)
    assert not victim.of_type("session_close_ack") and not victim.of_type("error")
    assert not [m for m in node.of_type("job_assign") if m["session_id"] == intruder.session_id]


async def test_session_close_flushes_acks_and_then_refuses_audio(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    node = await peers(SimNode(replicas[1].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await browser.init()
    audio = opus_plan_a(5)
    await browser.chunk(audio)
    await browser.send({"type": "session_close", "session_id": browser.session_id, "reason": "x"})
    await browser.wait_type("session_close_ack", session_id=browser.session_id)
    job = await node.wait_for(job_of(0))
    assert base64.b64decode(job["audio"]) == audio
    assert not {"is_manual_cut", "is_timeout_triggered", "is_max_duration_triggered"} & set(job)
    start = mark(browser)
    await browser.chunk(opus_plan_a(5))
    await browser.wait_for(is_error("SESSION_CLOSED"), start=start)
    # A result in flight when the client closed still reaches it (§7.4: the original dropped it).
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])


# -- bounded buffers ---------------------------------------------------------------------------


async def test_oversized_chunks_and_utterances_are_refused_and_the_socket_stays_usable(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    node = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[2].ws + "/ws/session", src, tgt))
    await browser.init()
    big = base64.b64encode(b"\0" * (MAX_UTTERANCE_BYTES + 1)).decode()
    start = mark(browser)
    await browser.send(
        {"type": "audio_chunk", "session_id": browser.session_id, "seq": 1, "is_final": True,
         "payload": big}
    )  # fmt: skip
    refused = await browser.wait_for(is_error("INVALID_MESSAGE"), start=start)
    assert "max_utterance_bytes" in refused["message"]
    start = mark(browser)
    await browser.send(
        {"type": "utterance", "session_id": browser.session_id, "utterance_index": 0,
         "manual_cut": True, "src_lang": src, "tgt_lang": tgt, "dialect": None, "audio": big,
         "audio_format": "opus", "sample_rate": 16000, "trace_id": "t"}
    )  # fmt: skip
    await browser.wait_for(is_error("INVALID_MESSAGE"), start=start)
    # Nothing was dispatched, and the socket keeps working: the next utterance is index 0.
    audio = opus_plan_a(5)
    await browser.chunk(audio)
    await browser.final()
    job = await node.wait_for(is_job)
    assert job["utterance_index"] == 0 and base64.b64decode(job["audio"]) == audio
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])
    assert len(node.of_type("job_assign")) == 1


async def test_the_size_guard_cuts_a_growing_utterance_and_keeps_the_turn(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    node = await peers(SimNode(replicas[1].ws + "/ws/node", ([src], [tgt])))
    await node.register()
    browser = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await browser.init()
    # Three packets of 60 kB: 60 ms of audio per chunk (far from max_duration), 180 kB of bytes.
    chunk = opus_plan_a(3, packet_bytes=60000)
    for _ in range(3):  # the third would take the buffer past max_utterance_bytes
        await browser.chunk(chunk)
    cut = await node.wait_for(job_of(0))
    assert base64.b64decode(cut["audio"]) == chunk * 2
    assert not {"is_manual_cut", "is_timeout_triggered", "is_max_duration_triggered"} & set(cut)
    await browser.final()
    rest = await node.wait_for(job_of(1))
    assert base64.b64decode(rest["audio"]) == chunk
    assert rest["is_manual_cut"] is True and rest["turn_id"] == cut["turn_id"]


async def test_a_frame_beyond_max_frame_bytes_closes_only_that_socket(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    bystander = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await bystander.init()
    browser = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.send_raw('{"type":"client_heartbeat","pad":"' + "x" * MAX_FRAME_BYTES + '"}')
    with anyio.fail_after(5):
        await browser.closed.wait()
    assert browser.closed_code == 1009
    await heartbeat_round_trip(bystander)


# -- disconnects -------------------------------------------------------------------------------


async def test_a_browser_that_disconnects_leaves_no_owner_and_no_room_membership(
    replicas: list[Replica],
    peers: Peers,
    pair: tuple[str, str],
    redis_url: str,
    cluster_prefix: str,
) -> None:
    src, tgt = pair
    host = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await host.init()
    await host.send({"type": "room_create", "client_ts": 1})
    code = (await host.wait_type("room_create_ack"))["room_code"]
    guests = []
    for replica in replicas[1:]:
        guest = await peers(SimBrowser(replica.ws + "/ws/session", tgt, src))
        await guest.init()
        await guest.send({"type": "room_join", "room_code": code, "display_name": "g"})
        guests.append(guest)
    for peer in (host, *guests):
        await peer.wait_for(lambda m: is_type("room_members")(m) and len(m["members"]) == 3)
    leaver, stayer = guests
    # The leaver has spoken, so the scheduling core holds a node affinity for it.
    node = await peers(SimNode(replicas[0].ws + "/ws/node", ([tgt], [src])))
    await node.register()
    await leaver.speak(5)
    await node.wait_for(job_of(0, leaver.session_id))
    assert await has_affinity(redis_url, cluster_prefix, leaver.session_id)
    starts = {id(p): mark(p) for p in (host, stayer)}
    await leaver.close()
    for peer in (host, stayer):
        members = await peer.wait_for(
            lambda m: is_type("room_members", room_code=code)(m) and len(m["members"]) == 2,
            start=starts[id(peer)],
        )
        assert leaver.session_id not in {m["session_id"] for m in members["members"]}

    # The room broadcast goes out before the leaver's replica ends the session and gives up
    # its ownership (SessionGateway._end): the members' frames are no marker for those two.
    async def released() -> bool:
        return leaver.session_id not in await owners(
            redis_url, cluster_prefix, "session"
        ) and not await has_affinity(redis_url, cluster_prefix, leaver.session_id)

    await until(released)
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        room = await client.hgetall(f"{cluster_prefix}:{{rooms}}:room:{code}")
    finally:
        await client.aclose()
    assert set(room) - {"_meta"} == {host.session_id, stayer.session_id}


async def test_a_node_that_disconnects_is_offline_at_once_and_its_job_moves(
    patient: Replica, peers: Peers, pair: tuple[str, str]
) -> None:
    """With a 60 s job timeout, only the disconnect itself can move the job within the wait."""
    src, tgt = pair
    nodes = [await peers(SimNode(patient.ws + "/ws/node", ([src], [tgt]))) for _ in range(2)]
    for node in nodes:
        await node.register()
    browser = await peers(SimBrowser(patient.ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(5)
    held, job = await wait_any(nodes, is_job)
    gone, other = nodes[held], nodes[1 - held]
    assert {gone.node_id, other.node_id} <= cluster_node_ids(patient)
    await gone.close()
    moved = await other.wait_for(is_job, within=5)
    assert moved["job_id"] == job["job_id"] and moved["attempt_id"] == 2
    # Offline at once: out of the registry (its TTL, 45 s, had not run out).
    await until(lambda: gone.node_id not in cluster_node_ids(patient), limit_s=5)
    await other.send(other.result_for(moved))
    await browser.wait_type("translation_result", job_id=job["job_id"])
    # New work goes to the node that is left.
    await browser.speak(5)
    job1 = await other.wait_for(job_of(1))
    await other.send(other.result_for(job1))
    await browser.wait_type("translation_result", job_id=job1["job_id"])


async def test_a_node_reconnecting_to_another_replica_replaces_its_old_socket(
    replicas: list[Replica],
    peers: Peers,
    pair: tuple[str, str],
    redis_url: str,
    cluster_prefix: str,
) -> None:
    src, tgt = pair
    old = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    node_id = (await old.register())["node_id"]
    new = await peers(SimNode(replicas[1].ws + "/ws/node", ([src], [tgt]), node_id=node_id))
    assert (await new.register())["node_id"] == node_id
    # The newest connection wins: the old socket is closed (policy), the owner is the new one.
    with anyio.fail_after(5):
        await old.closed.wait()
    assert old.closed_code == 1008
    assert (await owners(redis_url, cluster_prefix, "node"))[node_id].startswith("r1@")
    # The old socket's clean-up did not take the new registration offline: jobs reach `new`.
    await new.send(new.heartbeat_message())
    browser = await peers(SimBrowser(replicas[2].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(5)
    job = await new.wait_for(is_job)
    assert job["attempt_id"] == 1
    await new.send(new.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])
    assert node_id in cluster_node_ids(replicas[2])
    assert not old.of_type("job_assign")


async def test_a_second_node_id_on_one_socket_is_refused(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    node = await peers(SimNode(replicas[2].ws + "/ws/node", ([src], [tgt])))
    node_id = (await node.register())["node_id"]
    assert node_id in cluster_node_ids(replicas[2])
    other = f"node-{secrets.token_hex(4).upper()}"
    await node.send({**node.register_message(), "node_id": other})
    with anyio.fail_after(5):
        await node.closed.wait()
    assert node.closed_code == 1008
    assert len(node.of_type("node_register_ack")) == 1
    # The refused id was never registered; the socket's own id went offline with it.
    await until(lambda: node_id not in cluster_node_ids(replicas[2]), limit_s=5)
    assert other not in cluster_node_ids(replicas[2])


async def test_a_refused_registration_leaves_no_claim_behind(
    replicas: list[Replica],
    peers: Peers,
    pair: tuple[str, str],
    redis_url: str,
    cluster_prefix: str,
) -> None:
    src, tgt = pair
    # Routable by the runtime (printable, no spaces) but not a valid scheduling id: the claim
    # is taken first and must be given back when the registration is refused.
    for bad in ("node#1", "has space"):
        node = await peers(SimNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
        await node.send({**node.register_message(), "node_id": bad})
        with anyio.fail_after(5):
            await node.closed.wait()
        assert node.closed_code == 1008
        assert not node.of_type("node_register_ack")
        assert bad not in await owners(redis_url, cluster_prefix, "node")


# -- rooms across replicas ---------------------------------------------------------------------


async def test_webrtc_signalling_is_relayed_across_replicas(
    replicas: list[Replica], peers: Peers, pair: tuple[str, str]
) -> None:
    src, tgt = pair
    alice = await peers(SimBrowser(replicas[0].ws + "/ws/session", src, tgt))
    await alice.init()
    await alice.send({"type": "room_create", "client_ts": 1})
    code = (await alice.wait_type("room_create_ack"))["room_code"]
    bob = await peers(SimBrowser(replicas[2].ws + "/ws/session", tgt, src))
    await bob.init()
    outsider = await peers(SimBrowser(replicas[1].ws + "/ws/session", tgt, src))
    await outsider.init()
    await bob.send({"type": "room_join", "room_code": code, "display_name": "Bob"})
    for peer in (alice, bob):
        await peer.wait_for(lambda m: is_type("room_members")(m) and len(m["members"]) == 2)

    sdp = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}
    await alice.send({"type": "webrtc_offer", "room_code": code, "to": bob.session_id, "sdp": sdp})
    offer = await bob.wait_type("webrtc_offer")
    assert offer["to"] == alice.session_id and offer["sdp"] == sdp  # `to` names the sender (§2.5)
    answer = {"type": "answer", "sdp": "v=0"}
    await bob.send(
        {"type": "webrtc_answer", "room_code": code, "to": alice.session_id, "sdp": answer}
    )
    got = await alice.wait_type("webrtc_answer")
    assert got["to"] == bob.session_id and got["sdp"] == answer
    candidate = {"candidate": "candidate:1 1 UDP 1 127.0.0.1 9 typ host", "sdpMLineIndex": 0}
    await bob.send(
        {"type": "webrtc_ice", "room_code": code, "to": alice.session_id, "candidate": candidate}
    )
    ice = await alice.wait_type("webrtc_ice")
    assert ice["to"] == bob.session_id and ice["candidate"] == candidate

    # A non-member cannot signal into the room; Bob turns Alice's raw voice off: her signalling
    # to him stops. The marker: the room_members broadcast Alice's next request sends to Bob
    # after those frames, from the same replica to the same inbox.
    bob_start = mark(bob)
    await outsider.send(
        {"type": "webrtc_offer", "room_code": code, "to": bob.session_id, "sdp": sdp}
    )
    await bob.send(
        {"type": "room_raw_voice_preference", "room_code": code,
         "target_session_id": alice.session_id, "receive_raw_voice": False}
    )  # fmt: skip
    await bob.wait_for(is_type("room_members", room_code=code), start=bob_start)
    await alice.send(
        {"type": "webrtc_ice", "room_code": code, "to": bob.session_id, "candidate": candidate}
    )
    bob_start = mark(bob)
    await alice.send(
        {"type": "room_raw_voice_preference", "room_code": code,
         "target_session_id": bob.session_id, "receive_raw_voice": True}
    )  # fmt: skip
    await bob.wait_for(is_type("room_members", room_code=code), start=bob_start)
    assert len(bob.of_type("webrtc_offer")) == 1 and not bob.of_type("webrtc_ice")


# -- draining ----------------------------------------------------------------------------------


async def test_a_drain_request_stops_readiness_and_closes_sockets_with_1012(
    redis_url: str, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler.cli import main

    prefix = f"drain{secrets.token_hex(4)}"
    replica = Replica(
        redis_url, "drainme", prefix, {**FAST_SETTINGS, "LINGUA_SERVER__DRAIN_UNREADY_MS": "2000"}
    )
    await anyio.to_thread.run_sync(replica.start)
    try:
        browser = await peers(SimBrowser(replica.ws + "/ws/session", "zh", "en"))
        await browser.init()
        assert replica.get("/readyz")[0] == 200
        for name in [k for k in os.environ if k.startswith("LINGUA_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("LINGUA_REDIS_URL", redis_url)
        monkeypatch.setenv("LINGUA_REDIS__KEY_PREFIX", prefix)
        assert await anyio.to_thread.run_sync(main, ["drain", "drainme", "--yes"]) == 0
        # Readiness goes false first, while sockets are still open (load balancers look first).
        await until(lambda: replica.get("/readyz")[0] == 503)
        assert not browser.closed.is_set()
        with anyio.fail_after(5):
            await browser.closed.wait()
        assert browser.closed_code == 1012
        # From now on the replica is never ready: it answers 503 "draining" or no longer listens.
        while replica.proc is not None and replica.proc.poll() is None:
            try:
                status, body = await anyio.to_thread.run_sync(replica.get, "/readyz")
            except OSError:
                break
            assert status == 503 and b"draining" in body, (status, body)
            await anyio.sleep(0.02)
        with anyio.fail_after(10):
            code = await anyio.to_thread.run_sync(replica.proc.wait)  # type: ignore[union-attr]
        assert code == 0, replica.log()
    finally:
        replica.stop()
