"""The gateways in process: one rule per test, real sockets, real Redis, no daemon."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pytest

from scheduler.scheduling.core import Dispatched, DispatchRequest
from tests.e2e.clients import SimBrowser, SimNode, wait_any
from tests.gateways.conftest import Served
from tests.waiting import until

pytestmark = pytest.mark.anyio

SRC, TGT = "zh", "en"
Peer = TypeVar("Peer", SimNode, SimBrowser)
Connect = Callable[[Any], Awaitable[object]]


async def connected(peers: Connect, peer: Peer) -> Peer:
    await peers(peer)
    return peer


def is_job(message: dict[str, Any]) -> bool:
    return message.get("type") == "job_assign"


async def spoken(
    peers: Connect, node_url: str, session_url: str, **init: Any
) -> tuple[SimNode, SimBrowser, dict[str, Any]]:
    """A node registered, a browser initialised (``init``: its session_init fields) that spoke
    one utterance, and the node's job_assign for it."""
    node = await connected(peers, SimNode(node_url, ([SRC], [TGT])))
    await node.register()
    browser = await connected(peers, SimBrowser(session_url, SRC, TGT))
    await browser.init(**init)
    await browser.speak(10)
    return node, browser, await node.wait_for(is_job)


async def test_session_init_is_acknowledged_with_a_new_session(
    served: Served, peers: Connect
) -> None:
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    ack = await browser.init(trace_id="trace-gw-1")
    assert ack["session_id"].startswith("s-") and ack["trace_id"] == "trace-gw-1"
    assert list(served.replica.sessions.local) == [ack["session_id"]]


async def test_a_frame_before_session_init_is_refused_with_an_error_frame(
    served: Served, peers: Connect
) -> None:
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.send({"type": "client_heartbeat", "session_id": "s-NOPE", "timestamp": 1})
    error = await browser.wait_type("error")
    assert error["code"] == "INVALID_SESSION" and error["message"] == "Session not initialized"


async def test_a_malformed_frame_gets_an_error_frame_and_the_socket_stays(
    served: Served, peers: Connect
) -> None:
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.send_raw("{not json")
    error = await browser.wait_type("error")
    assert error["code"] == "INVALID_MESSAGE"
    assert error["message"].startswith("Invalid message format")
    assert browser.closed_code is None


async def test_an_utterance_reaches_the_node_and_its_result_the_client(
    served: Served, peers: Connect
) -> None:
    node, browser, job = await spoken(peers, served.node_url, served.session_url)
    assert job["session_id"] == browser.session_id and job["attempt_id"] == 1
    await browser.wait_type("ui_event", event="DISPATCHED", job_id=job["job_id"])
    await node.send(node.result_for(job))
    got = await browser.wait_type("translation_result", job_id=job["job_id"])
    assert got["text_asr"] == "你好" and got["text_translated"] == "Hello"
    assert got["session_id"] == browser.session_id and got["utterance_index"] == 0


async def test_a_registration_without_languages_is_closed_with_1008(
    served: Served, peers: Connect
) -> None:
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT]), node_id="node-NOLANGS"))
    register = node.register_message()
    del register["language_capabilities"]
    await node.send(register)
    await node.closed.wait()
    assert node.closed_code == 1008
    assert node.of_type("node_register_ack") == []
    assert served.replica.nodes.count() == 0


async def test_a_frame_naming_another_node_is_not_acted_on(served: Served, peers: Connect) -> None:
    node, browser, job = await spoken(peers, served.node_url, served.session_url)
    forged = node.result_for(job) | {"node_id": "node-SOMEONEELSE"}
    await node.send(forged)
    await node.send(node.partial_for(job))  # a frame after it, to know the first was read
    await browser.wait_type("asr_partial")
    assert browser.of_type("translation_result") == []


async def test_a_node_disconnect_moves_its_job_to_another_node(
    served: Served, peers: Connect
) -> None:
    nodes = [await connected(peers, SimNode(served.node_url, ([SRC], [TGT]))) for _ in range(2)]
    for node in nodes:
        await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.speak(10)
    first, job = await wait_any(nodes, is_job)
    await nodes[first].close()
    other = nodes[1 - first]
    moved = await other.wait_type("job_assign", job_id=job["job_id"])
    assert moved["attempt_id"] == 2 and moved["audio"] == job["audio"]
    await other.send(other.result_for(moved))
    await browser.wait_type("translation_result", job_id=job["job_id"])


async def test_a_session_with_no_node_for_its_pair_is_told_at_once(
    served: Served, peers: Connect
) -> None:
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.speak(10)
    error = await browser.wait_type("error")
    assert error["code"] == "NO_AVAILABLE_NODE" and error["message"]
    no_node = served.replica.registry.get_sample_value("lingua_jobs_total", {"event": "no_node"})
    assert no_node == 1


async def test_a_job_ack_tells_the_client_the_node_accepted(served: Served, peers: Connect) -> None:
    node, browser, job = await spoken(peers, served.node_url, served.session_url)
    await node.send(
        {
            "type": "job_ack",
            "job_id": job["job_id"],
            "attempt_id": job["attempt_id"],
            "node_id": node.node_id,
            "session_id": job["session_id"],
            "trace_id": job["trace_id"],
        }
    )
    event = await browser.wait_type("ui_event", event="NODE_ACCEPTED")
    assert event["job_id"] == job["job_id"]


async def test_closing_the_session_socket_releases_the_session(
    served: Served, peers: Connect
) -> None:
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.close()
    await until(lambda: served.replica.sessions.count() == 0)


async def test_a_second_session_init_ends_the_first_session(served: Served, peers: Connect) -> None:
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    first = await browser.init()
    browser.received.clear()
    second = await browser.init()
    assert second["session_id"] != first["session_id"]
    assert list(served.replica.sessions.local) == [second["session_id"]]


async def test_a_frame_naming_another_session_is_refused(served: Served, peers: Connect) -> None:
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.send({"type": "client_heartbeat", "session_id": "s-SOMEONE", "timestamp": 1})
    error = await browser.wait_type("error")
    assert error["code"] == "INVALID_SESSION"
    assert error["message"] == "Session does not belong to this connection"


async def test_a_result_of_another_attempt_is_refused(served: Served, peers: Connect) -> None:
    node, browser, job = await spoken(peers, served.node_url, served.session_url)
    await node.send(node.result_for(job | {"attempt_id": job["attempt_id"] + 1}))
    await node.send(node.partial_for(job))  # read after the result: the result was handled
    await browser.wait_type("asr_partial")
    assert browser.of_type("translation_result") == []
    refused = served.replica.registry.get_sample_value(
        "lingua_jobs_total", {"event": "result_refused"}
    )
    assert refused == 1


class TwoSlotNode(SimNode):
    """A node that reports two slots (on every frame that carries capabilities)."""

    def register_message(self) -> dict[str, Any]:
        return super().register_message() | {"max_concurrent_jobs": 2}

    def heartbeat_message(self, running_jobs: int = 0) -> dict[str, Any]:
        return super().heartbeat_message(running_jobs) | {"max_concurrent_jobs": 2}


async def test_quick_utterances_beyond_the_slots_wait_and_all_get_translations(
    served: Served, peers: Connect
) -> None:
    """Issue 11: five utterances cut in quick succession against a node with two slots: the
    three that find it busy wait for its slots (oldest first) instead of failing."""
    node = await connected(peers, TwoSlotNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    for _ in range(5):
        await browser.speak(10)
    core = served.replica.core

    async def settled() -> bool:  # all five cut: two on the node, three waiting (or refused)
        jobs = await core.list_jobs()
        return bool(browser.of_type("error")) or [j.state for j in jobs].count("waiting") == 3

    await until(settled)
    assert browser.of_type("error") == [], "utterances beyond the node's slots were refused"
    assert len(node.of_type("job_assign")) == 2  # the node's two slots, no more
    for answered in range(5):
        job = node.of_type("job_assign")[answered]
        assert job["utterance_index"] == answered  # the waiters were served oldest first
        await node.send(node.result_for(job))
        await browser.wait_type("translation_result", job_id=job["job_id"])
        if answered < 3:  # the freed slot went to the next waiting utterance at once
            await node.wait_for(lambda m, n=answered: is_job(m) and m["utterance_index"] == n + 2)
    assert browser.of_type("error") == []
    results = browser.of_type("translation_result")
    assert sorted(m["utterance_index"] for m in results) == [0, 1, 2, 3, 4]
    dispatched = browser.of_type("ui_event")
    assert {m["utterance_index"] for m in dispatched if m["event"] == "DISPATCHED"} == set(range(5))


async def test_manual_cuts_stay_where_the_client_put_them_while_dispatch_stalls(
    served: Served, peers: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hangover after each cut: the timer that closes it must fire while dispatch waits on Redis.
    monkeypatch.setattr(served.replica.sessions.config, "hangover_manual_ms", 50)
    core, resume = served.replica.core, anyio.Event()
    dispatch, entered = core.dispatch, []

    async def stalled(request: DispatchRequest) -> Dispatched:
        entered.append(request.utterance_index)
        await resume.wait()
        return await dispatch(request)

    monkeypatch.setattr(core, "dispatch", stalled)
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    session = served.replica.sessions.local[browser.session_id]
    await browser.speak(10)
    await until(lambda: entered == [0])
    for index in (2, 3):  # two more cuts, each after the hangover of the one before closed
        await browser.speak(10)
        await until(lambda i=index: session.flow.next_utterance_index == i, limit_s=2)
    resume.set()
    jobs = [
        await node.wait_for(lambda m, i=i: is_job(m) and m["utterance_index"] == i)
        for i in range(3)
    ]
    assert [j["utterance_index"] for j in jobs] == [0, 1, 2]
    assert entered == [0, 1, 2]


async def test_a_fenced_replica_tells_its_sessions_then_closes_with_1012(
    served: Served, peers: Connect
) -> None:
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    for _ in range(2):  # two utterances in flight: the node never answers them
        await browser.speak(10)
        await browser.wait_type("ui_event", event="DISPATCHED")
    await until(lambda: len(node.of_type("job_assign")) == 2)
    served.replica.runtime.lifecycle.fence("test: presence refresh refused")
    await until(lambda: browser.closed_code is not None and node.closed_code is not None)
    told = [e for e in browser.of_type("ui_event") if e["event"] == "ERROR"]
    assert sorted(e["utterance_index"] for e in told) == [0, 1]
    errors = browser.of_type("error")
    assert [e["code"] for e in errors] == ["SCHEDULER_DEPENDENCY_DOWN"]
    assert "2 utterance(s)" in errors[0]["message"]
    assert browser.closed_code == 1012 and node.closed_code == 1012


async def test_a_fenced_replica_tells_of_the_cut_it_was_dispatching_at_the_wake_up(
    served: Served, peers: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGSTOP past the TTL, then SIGCONT: the cut buffered on the socket is being dispatched
    # when the replica learns it was fenced. That utterance cannot be finished here either.
    core, life = served.replica.core, served.replica.runtime.lifecycle
    dispatch, entered = core.dispatch, []

    async def until_fenced(request: DispatchRequest) -> Dispatched:
        entered.append(request.utterance_index)
        await life.fenced_event.wait()
        return await dispatch(request)

    monkeypatch.setattr(core, "dispatch", until_fenced)
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.speak(10)
    await until(lambda: entered == [0])
    life.fence("test: presence refresh refused")
    await until(lambda: browser.closed_code is not None)
    told = [e for e in browser.of_type("ui_event") if e["event"] == "ERROR"]
    assert [e["utterance_index"] for e in told] == [0]
    errors = browser.of_type("error")
    assert [e["code"] for e in errors] == ["SCHEDULER_DEPENDENCY_DOWN"]
    assert "1 utterance(s)" in errors[0]["message"]
    assert browser.closed_code == 1012


async def test_a_fenced_replica_moves_the_jobs_of_the_nodes_it_closes(
    served: Served, serve: Any, peers: Connect
) -> None:
    # A fenced replica closes its nodes at once (1012): nothing of it waits for their results,
    # so their jobs move now, not at the orphan grace, the node TTL or the job deadline.
    other = await serve()
    stopped = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await stopped.register()
    browser = await connected(peers, SimBrowser(other.session_url, SRC, TGT))
    await browser.init()
    await browser.speak(10)
    first = await stopped.wait_for(is_job)
    spare = await connected(peers, SimNode(other.node_url, ([SRC], [TGT])))
    await spare.register()
    served.replica.runtime.lifecycle.fence("test: presence refresh refused")
    await until(lambda: stopped.closed_code is not None)
    assert stopped.closed_code == 1012
    moved = await spare.wait_for(lambda m: is_job(m) and m["job_id"] == first["job_id"])
    assert moved["attempt_id"] == first["attempt_id"] + 1
    await spare.send(spare.result_for(moved))
    result = await browser.wait_type("translation_result", job_id=first["job_id"])
    assert result["utterance_index"] == 0


async def test_an_error_code_a_node_made_up_reaches_the_client_and_is_counted_as_other(
    served: Served, peers: Connect
) -> None:
    node, browser, job = await spoken(peers, served.node_url, served.session_url)
    failed = node.result_for(job) | {
        "success": False,
        "error": {"code": "GPU_OOM_7f3a9c", "message": "CUDA out of memory"},
    }
    await node.send(failed)
    error = await browser.wait_type("error")
    assert error["code"] == "GPU_OOM_7f3a9c"  # relayed as the node said it
    samples = {
        s.labels["code"]: s.value
        for metric in served.replica.registry.collect()
        if metric.name == "lingua_client_errors"
        for s in metric.samples
        if s.name == "lingua_client_errors_total"
    }
    assert samples["OTHER"] == 1 and "GPU_OOM_7f3a9c" not in samples
