"""A replica stopped (SIGSTOP) past its presence TTL, taken over, then woken (SIGCONT): issue 12,
item 6, with real replicas on a real Redis.

* a ``job_assign`` sent to one of its nodes while it was stopped waits (held) for the node to
  come back; when its job has moved to another node meanwhile, it is dropped at the end of the
  route grace (counted, ``obsolete``), not dead-lettered as ``no_owner``.
"""

from __future__ import annotations

import signal
from typing import Any

import anyio
import pytest

from cross_instance.keys import RuntimeKeys
from cross_instance.redis_client import AnyRedis
from tests.e2e.clients import SimBrowser, SimNode, is_job
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SETTINGS = {
    **FAST_SETTINGS,
    "LINGUA_SCHEDULING__JOB_TIMEOUT_MS": "30000",  # a job moved at its deadline would show
    "LINGUA_SCHEDULING__NODE_ORPHAN_GRACE_MS": "300",
    "LINGUA_RUNTIME__TAKEOVER_INTERVAL_MS": "300",
}


def counter(replica: Replica, line_start: str) -> float:
    text = replica.get("/metrics")[1].decode()
    return sum(
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(line_start)
    )


async def test_a_job_assign_held_for_a_stopped_replicas_node_is_not_dead_lettered_once_moved(
    redis_url: str, key_prefix: str, redis: AnyRedis, peers: Any
) -> None:
    a = Replica(redis_url, "stopped-a", key_prefix, SETTINGS)
    b = Replica(redis_url, "alive-b", key_prefix, SETTINGS)
    for replica in (a, b):
        await anyio.to_thread.run_sync(replica.start)
    assert a.proc is not None
    try:
        frozen = await peers(SimNode(a.ws + "/ws/node", (["de"], ["fr"])))
        await frozen.register()
        browser = await peers(SimBrowser(b.ws + "/ws/session", "de", "fr"))
        await browser.init()
        a.proc.send_signal(signal.SIGSTOP)
        await browser.speak(5)  # dispatched to the frozen node: still in the pools
        dispatched = await browser.wait_type("ui_event", event="DISPATCHED")
        spare = await peers(SimNode(b.ws + "/ws/node", (["de"], ["fr"])))
        await spare.register()
        # b takes the stopped replica over; the frozen node gets the orphan grace, then its job
        # moves to the spare node.
        moved = await spare.wait_for(is_job, within=10)
        assert moved["job_id"] == dispatched["job_id"] and moved["attempt_id"] == 2
        await spare.send(spare.result_for(moved))
        await browser.wait_type("translation_result", job_id=moved["job_id"])
        dlq = RuntimeKeys(key_prefix).dlq()
        obsolete = 'lingua_runtime_dropped_total{reason="obsolete"}'

        async def grace_over() -> bool:
            return await redis.xlen(dlq) > 0 or counter(b, obsolete) > 0

        await until(grace_over, 10)
        assert await redis.xlen(dlq) == 0
        assert counter(b, obsolete) == 1
        assert frozen.of_type("job_assign") == []
    finally:
        a.proc.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()
