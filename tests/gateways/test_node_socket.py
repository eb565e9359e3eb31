"""The node socket's smaller rules: what a heartbeat keeps, the clean-up of a node a sweep took
offline."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from tests.e2e.clients import SimNode
from tests.gateways.conftest import Served
from tests.waiting import until

pytestmark = pytest.mark.anyio

SRC, TGT = "zh", "en"
Connect = Callable[[Any], Awaitable[Any]]


async def test_a_heartbeat_without_slots_keeps_the_registered_slots(
    served: Served, peers: Connect
) -> None:
    node: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await node.send(node.register_message() | {"max_concurrent_jobs": 8})
    ack = await node.wait_type("node_register_ack")
    node.node_id = ack["node_id"]
    await node.send(node.heartbeat_message())  # languages, no max_concurrent_jobs

    async def heartbeat_seen() -> bool:
        [info] = await served.replica.core.list_nodes()
        return info.reported_load is not None

    await until(heartbeat_seen)
    [info] = await served.replica.core.list_nodes()
    assert info.max == 8


async def test_a_node_a_sweep_took_offline_releases_its_id_when_its_socket_closes(
    served: Served, peers: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    node: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    assert node.node_id is not None
    ownership = served.replica.runtime.ownership
    assert (await ownership.resolve("node", node.node_id))[0] != ""
    [info] = await served.replica.core.list_nodes()
    assert info.alive_until_ms is not None
    report = await served.replica.core.sweep(now_ms=info.alive_until_ms + 1)
    assert report.offline_nodes == [node.node_id]
    with caplog.at_level(logging.INFO, logger="lingua"):
        await node.close()
        await until(lambda: served.replica.nodes.count() == 0)

        async def released() -> bool:
            assert node.node_id is not None
            return (await ownership.resolve("node", node.node_id))[0] == ""

        await until(released)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_node_over_the_language_limit_is_told_the_limit_then_closed(
    served: Served, peers: Connect
) -> None:
    """Issue 11: beyond scheduling.max_languages_per_node the node gets an error frame naming
    the limit, then 1008; on main it was closed without a word."""
    limit = served.replica.config.scheduling.max_languages_per_node
    langs = [f"l{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(limit + 1)]
    node: SimNode = await peers(SimNode(served.node_url, (langs, [TGT])))
    await node.send(node.register_message())
    with anyio.fail_after(5):
        await node.closed.wait()
    assert node.closed_code == 1008
    [error] = node.of_type("error")
    assert error["code"] == "INVALID_MESSAGE"
    assert "max_languages_per_node" in error["message"] and str(limit) in error["message"]
    assert not node.of_type("node_register_ack")
