"""The node socket's smaller rules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

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
