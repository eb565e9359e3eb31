"""Issue 14 item 5: every limit exceeded in process (real sockets, real Redis): the peer gets the
error frame or close code, ``lingua_limit_breaches_total{limit}`` counts it, and honest traffic on
the replica's other connections goes on (docs/security.md, "Limits")."""

from __future__ import annotations

import base64

import anyio
import pytest
from websockets.asyncio.client import connect

from scheduler.limits import LIMITS
from tests.e2e.clients import SimBrowser, SimNode
from tests.gateways.conftest import Serve, Served
from tests.gateways.test_gateways import Connect, connected, is_job
from tests.waiting import until

pytestmark = pytest.mark.anyio

SRC, TGT = "zh", "en"
BREACHES = "lingua_limit_breaches_total"


def breaches(served: Served, limit: str) -> float:
    value = served.replica.registry.get_sample_value(BREACHES, {"limit": limit})
    assert value is not None, f"{BREACHES}{{limit={limit}}} is not exported"
    return value


def others_untouched(served: Served, limit: str) -> dict[str, float]:
    return {name: breaches(served, name) for name in LIMITS if name != limit}


async def heartbeat_round_trip(browser: SimBrowser) -> None:
    start = len(browser.received)
    await browser.send(
        {"type": "client_heartbeat", "session_id": browser.session_id, "timestamp": 1}
    )
    await browser.wait_for(lambda m: m.get("type") == "server_heartbeat", start=start)


async def honest_utterance(browser: SimBrowser, node: SimNode) -> None:
    """One utterance of ``browser`` through ``node`` to its translation_result."""
    start = len(node.received)
    await browser.speak(10)
    job = await node.wait_for(
        lambda m: is_job(m) and m["session_id"] == browser.session_id, start=start
    )
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])


async def closed_with(peer: SimBrowser | SimNode) -> int | None:
    with anyio.fail_after(10):
        await peer.closed.wait()
    return peer.closed_code


class ForwardedBrowser(SimBrowser):
    """A browser behind a proxy that sent ``X-Forwarded-For``."""

    def __init__(self, url: str, forwarded_for: str) -> None:
        super().__init__(url, SRC, TGT)
        self.forwarded_for = forwarded_for

    async def connect(self) -> None:
        self.ws = await connect(
            self.url,
            compression=None,
            max_size=None,
            open_timeout=5,
            additional_headers={"X-Forwarded-For": self.forwarded_for},
        )


async def test_every_limit_is_exported_at_zero_from_the_start(served: Served) -> None:
    assert {name: breaches(served, name) for name in LIMITS} == dict.fromkeys(LIMITS, 0.0)


# -- connections -----------------------------------------------------------------------------


async def test_a_connection_past_max_connections_is_closed_1013_and_counted(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(server={"max_connections": 2})
    honest = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await honest.init()
    other = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await other.init()
    refused = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    assert await closed_with(refused) == 1013
    assert breaches(served, "connections") == 1
    await heartbeat_round_trip(honest)
    await heartbeat_round_trip(other)
    assert others_untouched(served, "connections") == dict.fromkeys(
        set(LIMITS) - {"connections"}, 0.0
    )


async def test_connections_per_address_count_the_peer_and_ignore_forwarded_for_by_default(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(limits={"connections_per_address": 2})
    honest = await connected(peers, ForwardedBrowser(served.session_url, "10.0.0.1"))
    await honest.init()
    # Another X-Forwarded-For, the same peer (127.0.0.1): with no trusted proxy it counts as one.
    second = await connected(peers, ForwardedBrowser(served.session_url, "10.0.0.2"))
    await second.init()
    refused = await connected(peers, ForwardedBrowser(served.session_url, "10.0.0.3"))
    assert await closed_with(refused) == 1008
    assert breaches(served, "connections_per_address") == 1
    await heartbeat_round_trip(honest)
    await heartbeat_round_trip(second)
    # A closed connection gives its place back.
    await second.close()
    await until(lambda: served.replica.addresses.open == {"127.0.0.1": 1})
    again = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await again.init()


async def test_behind_a_trusted_proxy_connections_count_per_forwarded_address(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(limits={"connections_per_address": 2, "trusted_proxies": 1})
    # The client wrote the left entry itself; the trusted proxy appended the right one.
    first = [
        await connected(peers, ForwardedBrowser(served.session_url, f"6.6.6.{i}, 10.0.0.1"))
        for i in range(2)
    ]
    for browser in first:
        await browser.init()
    refused = await connected(peers, ForwardedBrowser(served.session_url, "10.0.0.1"))
    assert await closed_with(refused) == 1008
    assert breaches(served, "connections_per_address") == 1
    # Another client behind the same proxy (same peer address) is not refused.
    neighbour = await connected(peers, ForwardedBrowser(served.session_url, "10.0.0.2"))
    await neighbour.init()
    await heartbeat_round_trip(neighbour)
    for browser in first:
        await heartbeat_round_trip(browser)
    assert served.replica.addresses.open == {"10.0.0.1": 2, "10.0.0.2": 1}


# -- message rate --------------------------------------------------------------------------


async def test_session_messages_past_the_rate_are_dropped_with_one_rate_limited_error(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(limits={"session_messages_per_second": 1, "session_message_burst": 5})
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    honest = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await honest.init()
    flooder = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await flooder.init()  # one of its 5
    sent = 12
    for _ in range(sent):
        await flooder.send(
            {"type": "client_heartbeat", "session_id": flooder.session_id, "timestamp": 1}
        )

    def answered() -> int:
        return len(flooder.of_type("server_heartbeat"))

    # Each heartbeat is answered or dropped and counted.
    await until(lambda: answered() + breaches(served, "session_message_rate") == sent)
    assert 4 <= answered() < sent
    error = await flooder.wait_type("error", code="RATE_LIMITED")
    assert "per second" in error["message"] and error["message"].endswith(".")
    assert len(flooder.of_type("error")) == 1  # once, not once per dropped frame
    assert flooder.closed_code is None
    # The honest session on the same replica (its own allowance) is unaffected.
    await honest_utterance(honest, node)
    assert honest.of_type("error") == []


async def test_a_node_past_its_message_rate_is_closed_1008_and_counted(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(limits={"node_messages_per_second": 1, "node_message_burst": 4})
    honest = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await honest.register()  # register + heartbeat: 2 of its 4
    flooder = await connected(peers, SimNode(served.node_url, ([TGT], [SRC])))
    await flooder.register()
    for _ in range(10):
        await flooder.send(flooder.heartbeat_message())
    assert await closed_with(flooder) == 1008
    assert breaches(served, "node_message_rate") == 1
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await honest_utterance(browser, honest)
    assert honest.closed_code is None


# -- sizes -----------------------------------------------------------------------------------


async def test_a_frame_past_max_frame_bytes_is_closed_1009_and_counted(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(server={"max_frame_bytes": 4096})
    honest = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await honest.init()
    big = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await big.init()
    await big.send_raw('{"type":"client_heartbeat","pad":"' + "x" * 5000 + '"}')
    assert await closed_with(big) == 1009
    await until(lambda: breaches(served, "frame_bytes") == 1)
    await heartbeat_round_trip(honest)
    assert breaches(served, "frame_bytes") == 1


async def test_audio_past_max_utterance_bytes_is_refused_counted_and_the_socket_stays(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(session={"max_utterance_bytes": 2048})
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    honest = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await honest.init()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.chunk(b"\0" * 2049, is_final=True)
    error = await browser.wait_type("error", code="INVALID_MESSAGE")
    assert "max_utterance_bytes" in error["message"] and error["message"].endswith(".")
    assert breaches(served, "utterance_bytes") == 1
    audio = b"\0" * 2049
    await browser.send(
        {"type": "utterance", "session_id": browser.session_id, "utterance_index": 0,
         "manual_cut": True, "src_lang": SRC, "tgt_lang": TGT, "dialect": None,
         "audio": base64.b64encode(audio).decode(), "audio_format": "opus",
         "sample_rate": 16000, "trace_id": "t"}
    )  # fmt: skip
    await until(lambda: breaches(served, "utterance_bytes") == 2)
    assert node.of_type("job_assign") == []
    await honest_utterance(honest, node)
    await honest_utterance(browser, node)  # the refused one's socket still works


# -- rooms -----------------------------------------------------------------------------------


async def test_rooms_past_rooms_per_session_are_refused_with_room_limit(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(limits={"rooms_per_session": 2})
    host = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await host.init()
    await host.send({"type": "room_create", "client_ts": 1})
    code = (await host.wait_type("room_create_ack"))["room_code"]
    roamer = await connected(peers, SimBrowser(served.session_url, TGT, SRC))
    await roamer.init()
    await roamer.send({"type": "room_create", "client_ts": 1})  # 1
    await roamer.wait_type("room_create_ack")
    await roamer.send({"type": "room_join", "room_code": code, "display_name": "r"})  # 2
    await roamer.wait_for(lambda m: m.get("type") == "room_members" and len(m["members"]) == 2)
    await roamer.send({"type": "room_create", "client_ts": 2})  # 3: refused
    refusal = await roamer.wait_type("room_error")
    assert refusal["code"] == "ROOM_LIMIT" and "2 rooms" in refusal["message"]
    assert breaches(served, "rooms_per_session") == 1
    assert len(roamer.of_type("room_create_ack")) == 1
    # It is still in the room it joined; the host, on its own allowance, creates another.
    assert served.replica.sessions.local[roamer.session_id].room_code == code
    await host.send({"type": "room_create", "client_ts": 3})
    await until(lambda: len(host.of_type("room_create_ack")) == 2)
    assert host.of_type("room_error") == []


async def test_a_join_past_max_room_members_is_refused_room_full_and_counted(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(session={"max_room_members": 2})
    host = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await host.init()
    await host.send({"type": "room_create", "client_ts": 1})
    code = (await host.wait_type("room_create_ack"))["room_code"]
    guest = await connected(peers, SimBrowser(served.session_url, TGT, SRC))
    await guest.init()
    await guest.send({"type": "room_join", "room_code": code, "display_name": "g"})
    await guest.wait_for(lambda m: m.get("type") == "room_members" and len(m["members"]) == 2)
    third = await connected(peers, SimBrowser(served.session_url, TGT, SRC))
    await third.init()
    await third.send({"type": "room_join", "room_code": code, "display_name": "t"})
    refusal = await third.wait_type("room_error")
    assert refusal["code"] == "ROOM_FULL"
    assert breaches(served, "room_members") == 1
    await heartbeat_round_trip(host)
    await heartbeat_round_trip(guest)
    assert host.of_type("room_error") == [] and guest.of_type("room_error") == []


# -- pending jobs ----------------------------------------------------------------------------


async def test_an_utterance_past_pending_jobs_per_session_gets_an_error_and_no_job(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(limits={"pending_jobs_per_session": 2})
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    for _ in range(2):
        await browser.speak(10)
    await until(lambda: len(node.of_type("job_assign")) == 2)
    await browser.speak(10)  # utterance 2: its job would be the third unanswered
    error = await browser.wait_type("error", code="TOO_MANY_PENDING_JOBS")
    assert "not translated" in error["message"]
    event = await browser.wait_type("ui_event", event="ERROR", utterance_index=2)
    assert event["error_code"] == "TOO_MANY_PENDING_JOBS"
    assert breaches(served, "pending_jobs") == 1
    assert len(node.of_type("job_assign")) == 2
    # Another session is counted on its own; and once a result arrives, this one dispatches again.
    honest = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await honest.init()
    await honest_utterance(honest, node)
    first = node.of_type("job_assign")[0]
    await node.send(node.result_for(first))
    await browser.wait_type("translation_result", job_id=first["job_id"])
    await browser.speak(10)
    job = await node.wait_for(lambda m: is_job(m) and m["utterance_index"] == 3)
    assert job["session_id"] == browser.session_id
    assert breaches(served, "pending_jobs") == 1
