"""Issue 11, session side: rooms behave like rooms, words for people, a job's session is the job
record's. In process, real sockets and Redis; the frames and timings are the real browser's
(reference/real-clients.md): no ``preferred_lang`` in its room UI, ``two_way_auto`` by default,
one ``audio_chunk`` about every 256 ms, an ``alert()`` for every ``error`` frame."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from cross_instance.clock import now_ms
from scheduler.rooms import EXPIRED_MESSAGE
from tests.e2e.clients import SimBrowser, SimNode, opus_plan_a, wait_any
from tests.gateways.conftest import Serve, Served
from tests.gateways.test_gateways import Connect, connected, is_job, spoken
from tests.waiting import until

pytestmark = pytest.mark.anyio

SRC, TGT = "zh", "en"
INTERNAL_WORDS = ("dispatch_job", "NO_POOL", "ALL_FULL", "NO_LIVE_NODE", "_job", ".lua")
CHUNK_INTERVAL_S = 0.256  # the real browser's audio_chunk cadence


def metric(served: Served, name: str, **labels: str) -> float:
    return served.replica.registry.get_sample_value(name, labels) or 0.0


def two_way(lang_a: str = SRC, lang_b: str = TGT) -> dict[str, Any]:
    """The real browser's two-way session_init fields."""
    return {
        "mode": "two_way_auto",
        "lang_a": lang_a,
        "lang_b": lang_b,
        "auto_langs": [lang_a, lang_b],
    }


async def in_room(
    peers: Connect, host_url: str, guest_urls: list[str], **init: Any
) -> tuple[SimBrowser, list[SimBrowser], str]:
    """A host that created a room and guests that joined it, as the real UI does it (no
    ``preferred_lang``); returns them and the room code once every member saw every member."""
    host = await connected(peers, SimBrowser(host_url, "auto" if init else SRC, TGT))
    await host.init(**init)
    await host.send({"type": "room_create", "client_ts": 1})
    code: str = (await host.wait_type("room_create_ack"))["room_code"]
    guests = []
    for url in guest_urls:
        guest = await connected(peers, SimBrowser(url, TGT, SRC))
        await guest.init()
        await guest.send({"type": "room_join", "room_code": code, "display_name": "guest"})
        guests.append(guest)
    size = 1 + len(guests)
    for peer in (host, *guests):
        await peer.wait_for(lambda m: m.get("type") == "room_members" and len(m["members"]) == size)
    return host, guests, code


# -- item 4: rooms behave like rooms ---------------------------------------------------------


async def test_a_room_without_preferred_languages_gets_the_speakers_results(
    served: Served, peers: Connect
) -> None:
    """Fails on main: with no preferred_lang anywhere the result went back to the speaker only."""
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    host, (guest,), _ = await in_room(peers, served.session_url, [served.session_url])
    await host.speak(10)
    job = await node.wait_for(is_job)
    await node.send(node.result_for(job))
    for peer in (host, guest):
        got = await peer.wait_type("translation_result", job_id=job["job_id"])
        assert got["session_id"] == peer.session_id and got["text_translated"] == "Hello"


async def test_a_two_way_room_dispatches_each_language_once_across_replicas(
    serve: Serve, peers: Connect
) -> None:
    """Fails on main: every target of a two-way utterance had the key (session, index, lang_b),
    so the second language was a 'replay' (no job_assign) and its member got nothing."""
    first, second = await serve(), await serve()
    nodes = [await connected(peers, SimNode(first.node_url, ([SRC], [TGT]))) for _ in range(2)]
    for node in nodes:
        await node.register()
    host = await connected(peers, SimBrowser(first.session_url, "auto", TGT))
    await host.init(**two_way())
    await host.send({"type": "room_create", "client_ts": 1})
    code = (await host.wait_type("room_create_ack"))["room_code"]
    members = {}
    for lang, replica in (("en", first), ("de", second)):
        member = await connected(peers, SimBrowser(replica.session_url, lang, SRC))
        await member.init()
        await member.send({"type": "room_join", "room_code": code, "preferred_lang": lang})
        members[lang] = member
    for peer in (host, *members.values()):
        await peer.wait_for(lambda m: m.get("type") == "room_members" and len(m["members"]) == 3)
    await host.speak(10)
    jobs = {}
    for lang in members:
        index, job = await wait_any(nodes, lambda m, lang=lang: is_job(m) and m["tgt_lang"] == lang)
        jobs[lang] = (nodes[index], job)
    assert jobs["en"][0] is not jobs["de"][0]  # one (session, index) never twice on a node
    for lang, (node, job) in jobs.items():
        await node.send(node.result_for(job, text_translated=f"in {lang}"))
    for lang, member in members.items():
        got = await member.wait_type("translation_result", job_id=jobs[lang][1]["job_id"])
        assert got["text_translated"] == f"in {lang}" and got["session_id"] == member.session_id
    # The speaker sees its own target language (en), once.
    await host.wait_type("translation_result", job_id=jobs["en"][1]["job_id"])
    assert len(host.of_type("translation_result")) == 1
    for node, _ in jobs.values():
        assert len(node.of_type("job_assign")) == 1


async def test_an_active_room_outlives_room_idle_and_an_idle_one_tells_every_member(
    serve: Serve, peers: Connect
) -> None:
    """Fails on main: the room expired room_idle after the last join although the host kept
    speaking, the late join got ROOM_NOT_FOUND, and nobody was ever sent room_expired."""
    idle_ms = 1000
    first = await serve(
        session={"room_idle_ms": idle_ms, "room_touch_interval_ms": 200},
        scheduling={"sweep_interval_ms": 50},
    )
    second = await serve(
        session={"room_idle_ms": idle_ms, "room_touch_interval_ms": 200},
        scheduling={"sweep_interval_ms": 50},
    )
    host, (guest,), code = await in_room(peers, first.session_url, [second.session_url])
    # The host talks for 2.5 room_idle, one chunk every 256 ms (no cut: no node is needed).
    for _ in range(round(2.5 * idle_ms / 1000 / CHUNK_INTERVAL_S)):
        await host.chunk(opus_plan_a(10))
        await anyio.sleep(CHUNK_INTERVAL_S)
    late = await connected(peers, SimBrowser(second.session_url, TGT, SRC))
    await late.init()
    await late.send({"type": "room_join", "room_code": code, "display_name": "late"})
    await late.wait_for(lambda m: m.get("type") == "room_members" and len(m["members"]) == 3)
    assert late.of_type("room_error") == []
    assert host.of_type("room_expired") == []
    # Then silence: every member is told, once, and the room is gone.
    for peer in (host, guest, late):
        expired = await peer.wait_type("room_expired", within=5, room_code=code)
        assert expired["message"] == EXPIRED_MESSAGE
    expired_total = metric(first, "lingua_rooms_expired_total") + metric(
        second, "lingua_rooms_expired_total"
    )
    assert expired_total == 1
    await guest.send({"type": "room_join", "room_code": code, "display_name": "again"})
    refused = await guest.wait_type("room_error")
    assert refused["code"] == "ROOM_NOT_FOUND" and refused["message"].endswith(".")


# -- item 5: words for people ----------------------------------------------------------------


async def test_with_no_node_the_client_gets_one_human_alert_not_one_per_utterance(
    served: Served, peers: Connect
) -> None:
    """Fails on main: three utterances, three `error` frames reading 'dispatch_job: NO_POOL'."""
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init(trace_id="trace-words")
    for _ in range(3):
        await browser.speak(10)
    await until(lambda: len(browser.of_type("ui_event")) >= 3)
    events = [m for m in browser.of_type("ui_event") if m["event"] == "ERROR"]
    assert len(events) == 3 and {e["trace_id"] for e in events} == {"trace-words"}
    (error,) = browser.of_type("error")
    assert error["code"] == "NO_AVAILABLE_NODE"
    assert error["message"][0].isupper() and error["message"].endswith(".")
    assert not any(word in error["message"] for word in INTERNAL_WORDS)
    assert metric(served, "lingua_client_errors_suppressed_total", code="NO_AVAILABLE_NODE") == 2


async def test_a_timed_out_job_carries_the_sessions_trace_on_its_cancel_and_its_failure(
    serve: Serve, peers: Connect
) -> None:
    """Fails on main: the job_cancel and the ui_event ERROR of a job that failed at its deadline
    had trace_id "" (the failover read the trace from a payload it no longer returned)."""
    served = await serve(
        scheduling={"job_timeout_ms": 1000, "max_attempts": 1, "sweep_interval_ms": 50}
    )
    node, browser, job = await spoken(
        peers, served.node_url, served.session_url, trace_id="trace-timeout"
    )
    cancel = await node.wait_type("job_cancel", job_id=job["job_id"])
    assert cancel["trace_id"] == "trace-timeout"
    event = await browser.wait_type("ui_event", event="ERROR", job_id=job["job_id"])
    assert event["trace_id"] == "trace-timeout" and event["error_code"] == "JOB_TIMEOUT"
    error = await browser.wait_type("error")
    assert error["code"] == "JOB_TIMEOUT"
    assert not any(word in error["message"] for word in INTERNAL_WORDS)


# -- item 7, session side --------------------------------------------------------------------


async def test_node_accepted_goes_to_the_jobs_session_not_the_one_the_node_names(
    served: Served, peers: Connect
) -> None:
    """Fails on main: the ui_event went to the session named in the node's job_ack."""
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    owner = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await owner.init()
    other = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await other.init()
    await owner.speak(10)
    job = await node.wait_for(is_job)
    await node.send(
        {
            "type": "job_ack",
            "job_id": job["job_id"],
            "attempt_id": job["attempt_id"],
            "node_id": node.node_id,
            "session_id": other.session_id,
            "trace_id": job["trace_id"],
        }
    )
    event = await owner.wait_type("ui_event", event="NODE_ACCEPTED", within=5)
    assert event["job_id"] == job["job_id"] and event["session_id"] == owner.session_id
    await other.send({"type": "client_heartbeat", "session_id": other.session_id, "timestamp": 1})
    await other.wait_type("server_heartbeat")
    assert [m for m in other.of_type("ui_event") if m["event"] == "NODE_ACCEPTED"] == []


async def test_a_silent_job_of_an_ended_session_is_cancelled_not_moved(
    serve: Serve, peers: Connect
) -> None:
    """Fails on main: after end_session the sweep moved the job to the other node (attempt 2)."""
    served = await serve(
        scheduling={"job_timeout_ms": 1000, "max_attempts": 3, "sweep_interval_ms": 50}
    )
    nodes = [await connected(peers, SimNode(served.node_url, ([SRC], [TGT]))) for _ in range(2)]
    for node in nodes:
        await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init(trace_id="trace-ended")
    await browser.speak(10)
    held, job = await wait_any(nodes, is_job)
    await browser.close()
    await until(lambda: served.replica.sessions.count() == 0)
    cancel = await nodes[held].wait_type("job_cancel", job_id=job["job_id"])
    assert cancel["trace_id"] == "trace-ended"
    await until(lambda: metric(served, "lingua_jobs_total", event="abandoned") == 1)
    assert metric(served, "lingua_jobs_total", event="reassigned") == 0
    assert nodes[1 - held].of_type("job_assign") == []
    running = {n.node_id: n.running for n in await served.replica.core.list_nodes()}
    assert running == {nodes[0].node_id: 0, nodes[1].node_id: 0}


async def test_a_room_code_reused_after_expiry_gets_none_of_a_former_members_results(
    serve: Serve, peers: Connect, redis: Any
) -> None:
    """Fails without the membership check: the former member's session still held the code and
    fanned its results out to the strangers of the new room under that code."""
    served = await serve(
        session={"room_idle_ms": 1000, "room_touch_interval_ms": 200},
        scheduling={"sweep_interval_ms": 50},
    )
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    host, (guest,), code = await in_room(peers, served.session_url, [served.session_url])
    await host.wait_type("room_expired", within=5, room_code=code)
    # Strangers' room under the same code (codes are random: a collision, forced here).
    stranger = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await stranger.init()
    rooms = served.replica.rooms
    member = rooms.participant(stranger.session_id or "", "stranger", None)
    assert await rooms.scripts.call(
        redis,
        "create_room",
        [rooms.key(code), rooms.deadlines_key],
        [member.session_id, msgspec.json.encode(member), b"{}", 60000, code, now_ms()],
    )
    await host.speak(10)
    job = await node.wait_for(is_job)
    await node.send(node.result_for(job))
    await host.wait_type("translation_result", job_id=job["job_id"])
    await stranger.send(
        {"type": "client_heartbeat", "session_id": stranger.session_id, "timestamp": 1}
    )
    await stranger.wait_type("server_heartbeat")
    assert stranger.of_type("translation_result") == [] == guest.of_type("translation_result")
