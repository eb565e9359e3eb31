"""A node's socket drops and it comes back with the same id, as the real node does: its finished
work still reaches the client once, a job it lost moves at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.e2e.clients import SimBrowser, SimNode
from tests.gateways.conftest import Served
from tests.waiting import until

pytestmark = pytest.mark.anyio

SRC, TGT = "zh", "en"
Connect = Callable[[Any], Awaitable[Any]]


def is_job(message: dict[str, Any]) -> bool:
    return message.get("type") == "job_assign"


async def settled(browser: SimBrowser) -> None:
    """Every frame sent to the browser before now has arrived (a heartbeat round trip)."""
    await browser.send(
        {"type": "client_heartbeat", "session_id": browser.session_id, "timestamp": 1}
    )
    count = len(browser.of_type("server_heartbeat"))
    await browser.wait_for(
        lambda m: (
            m.get("type") == "server_heartbeat" and len(browser.of_type("server_heartbeat")) > count
        )
    )


async def back_again(served: Served, peers: Connect, node_id: str) -> SimNode:
    """The same node on a new socket: it registers with the id it had."""
    node: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT]), node_id=node_id))
    await node.send(node.register_message())
    await node.wait_type("node_register_ack")
    return node


async def test_a_result_sent_after_a_reconnect_wins_and_the_other_node_is_cancelled(
    served: Served, peers: Connect
) -> None:
    a: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await a.register()
    browser: SimBrowser = await peers(SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.speak(10)
    job = await a.wait_for(is_job)
    b: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await b.register()
    await a.close()
    moved = await b.wait_type("job_assign", job_id=job["job_id"])
    assert moved["attempt_id"] == 2
    assert a.node_id is not None
    again = await back_again(served, peers, a.node_id)
    await again.send(again.heartbeat_message(running_jobs=1))  # still working on it
    await again.send(again.result_for(job))  # attempt 1, on the new connection
    got = await browser.wait_type("translation_result", job_id=job["job_id"])
    assert got["text_translated"] == "Hello"
    cancel = await b.wait_type("job_cancel", job_id=job["job_id"])
    assert cancel["reason"] == "result_received"
    # b's own result comes too late: refused, the client still has exactly one
    await b.send(b.result_for(moved, text_translated="Hello again"))
    await b.send(b.partial_for(moved))  # read after the result: the result was handled
    await until(
        lambda: (
            served.replica.registry.get_sample_value(
                "lingua_jobs_total", {"event": "result_refused"}
            )
            == 1
        )
    )
    await settled(browser)
    assert len(browser.of_type("translation_result")) == 1
    assert browser.of_type("error") == []
    assert {n.running for n in await served.replica.core.list_nodes()} == {0}


async def test_a_job_no_other_node_can_take_waits_for_its_node(
    served: Served, peers: Connect
) -> None:
    a: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await a.register()
    browser: SimBrowser = await peers(SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.speak(10)
    job = await a.wait_for(is_job)
    await a.close()
    await until(lambda: served.replica.nodes.count() == 0)
    assert a.node_id is not None
    again = await back_again(served, peers, a.node_id)
    await again.send(again.heartbeat_message(running_jobs=1))
    await again.send(again.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])
    await settled(browser)
    assert browser.of_type("error") == []
    assert len(browser.of_type("translation_result")) == 1


async def test_a_job_the_reconnected_node_lost_moves_at_once(
    served: Served, peers: Connect
) -> None:
    a: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await a.register()
    browser: SimBrowser = await peers(SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    await browser.speak(10)
    job = await a.wait_for(is_job)
    await a.close()
    await until(lambda: served.replica.nodes.count() == 0)
    b: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await b.register()
    assert a.node_id is not None
    again = await back_again(served, peers, a.node_id)
    await again.send(again.heartbeat_message(running_jobs=0))  # it has nothing: lost
    # long before job_timeout_ms (30 s here)
    moved = await b.wait_type("job_assign", job_id=job["job_id"], within=3)
    assert moved["attempt_id"] == 2
    await b.send(b.result_for(moved))
    await browser.wait_type("translation_result", job_id=job["job_id"])
