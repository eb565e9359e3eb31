"""A replica that drains (SIGTERM) or dies (``kill -9``) in the middle of work (issue 12, items
4 and 5), with real replicas on a real Redis:

* a drain delivers the results of its own sessions' in-flight utterances (its buffered audio
  included) before it closes their sockets with 1012, and drops nothing;
* a draining replica sends no job to its nodes: they leave the pools at once, and each closes
  once the jobs it runs are answered;
* a node that comes back on another replica after its replica was killed, having lost one job
  (its result was ready while the socket was down) and still running another, gets the lost
  one redone at once, not at the job deadline (30 s here).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.abc
import pytest

from cross_instance.redis_client import AnyRedis
from scheduler.config import SchedulingConfig
from scheduler.scheduling.keys import SchedulingKeys
from tests.e2e.clients import SimBrowser, SimNode, is_job, opus_plan_a
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

# The default job timeout: a job moved only at its deadline shows up as 30 s, far past the
# limit these tests assert.
SETTINGS = {**FAST_SETTINGS, "LINGUA_SCHEDULING__JOB_TIMEOUT_MS": "30000"}


def dropped(replica: Replica) -> float:
    """lingua_runtime_dropped_total of ``replica``, every reason summed."""
    text = replica.get("/metrics")[1].decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("lingua_runtime_dropped_total{")
    )


async def start(*replicas: Replica) -> None:
    for replica in replicas:
        await anyio.to_thread.run_sync(replica.start)


async def test_a_drain_delivers_its_sessions_results_before_closing_them(
    redis_url: str, key_prefix: str, peers
) -> None:  # type: ignore[no-untyped-def]
    settings = {
        **SETTINGS,
        "LINGUA_SESSION__PAUSE_MS": "0",  # no silence cut: audio stays buffered until the drain
        "LINGUA_RUNTIME__DRAIN_GRACE_MS": "8000",
    }
    a = Replica(redis_url, "drain-s", key_prefix, settings)
    b = Replica(redis_url, "stay-s", key_prefix, settings)
    await start(a, b)
    try:
        node = await peers(SimNode(b.ws + "/ws/node", (["zh"], ["en"])))
        await node.register()
        browser = await peers(SimBrowser(a.ws + "/ws/session", "zh", "en"))
        await browser.init()
        # One utterance cut and on its way, and audio of the next one still buffered.
        await browser.speak(5)
        first = await node.wait_for(is_job)
        await browser.chunk(opus_plan_a(10))
        await node.send(node.heartbeat_message(running_jobs=1))

        async def work(job: dict[str, Any]) -> None:
            await anyio.sleep(1.0)  # the node's processing time: the results come mid-drain
            await node.send(node.result_for(job, text_translated=f"t{job['utterance_index']}"))

        async def answer_every_job(tg: anyio.abc.TaskGroup) -> None:
            answered = 0
            while True:
                job = await node.wait_for(is_job, within=20, start=answered)
                answered = node.received.index(job) + 1
                tg.start_soon(work, job)

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_every_job, tg)
            await anyio.to_thread.run_sync(a.proc.send_signal, 15)  # type: ignore[union-attr]
            with anyio.fail_after(15):
                await browser.closed.wait()
            tg.cancel_scope.cancel()
        assert browser.closed_code == 1012
        results = {m["utterance_index"]: m for m in browser.of_type("translation_result")}
        # Both reached the browser before the close: the one in flight and the flushed audio.
        assert set(results) == {0, 1}, browser.received
        assert results[0]["job_id"] == first["job_id"]
        assert browser.of_type("error") == []
        with anyio.fail_after(15):
            assert await anyio.to_thread.run_sync(a.proc.wait) == 0  # type: ignore[union-attr]
        assert dropped(b) == 0
    finally:
        a.stop()
        b.stop()


async def test_a_draining_replica_sends_its_nodes_no_new_job(
    redis_url: str, key_prefix: str, redis: AnyRedis, peers
) -> None:  # type: ignore[no-untyped-def]
    # Readiness off for 2 s before the listener closes: traffic still flows meanwhile.
    settings = {
        **SETTINGS,
        "LINGUA_SERVER__DRAIN_UNREADY_MS": "2000",
        "LINGUA_RUNTIME__DRAIN_GRACE_MS": "8000",
    }
    a = Replica(redis_url, "drain-n", key_prefix, settings)
    b = Replica(redis_url, "stay-n", key_prefix, settings)
    await start(a, b)
    try:
        node = await peers(SimNode(a.ws + "/ws/node", (["ja"], ["ko"])))
        await node.register()
        browser = await peers(SimBrowser(b.ws + "/ws/session", "ja", "ko"))
        await browser.init()
        await browser.speak(5)
        first = await node.wait_for(is_job)
        await node.send(node.heartbeat_message(running_jobs=1))

        await anyio.to_thread.run_sync(a.proc.send_signal, 15)  # type: ignore[union-attr]
        await until(lambda: a.get("/readyz")[0] == 503, 5)  # the drain has started
        drain_started = len(node.received)
        slots = SchedulingKeys(key_prefix, SchedulingConfig().domain).key("node_slots")

        async def out_of_the_pools() -> bool:
            return not await redis.hexists(slots, node.node_id)

        with anyio.move_on_after(1.0):  # (ordering only: the outcome is asserted below)
            await until(out_of_the_pools, 5)
        # The next utterance: never a job for the node the drain is about to close; the only
        # node of the pair is leaving, so an explicit error.
        await browser.speak(5)
        told = await browser.wait_for(
            lambda m: (
                m.get("type") == "ui_event"
                and m.get("event") in ("DISPATCHED", "ERROR")
                and m.get("utterance_index") == 1
            ),
            within=10,
        )
        assert told["event"] == "ERROR", told  # DISPATCHED: placed on the leaving node
        assert [m for m in node.received[drain_started:] if is_job(m)] == []
        assert not node.closed.is_set()  # it still runs the first job: kept open for it
        await node.send(node.result_for(first))
        got = await browser.wait_type("translation_result", within=10)
        assert got["job_id"] == first["job_id"]
        with anyio.fail_after(10):
            await node.closed.wait()  # answered everything: closed, to reconnect elsewhere
        assert node.closed_code == 1012
        assert [m for m in node.received[drain_started:] if is_job(m)] == []
    finally:
        a.stop()
        b.stop()


async def test_a_job_lost_with_a_killed_replica_is_redone_when_its_node_comes_back(
    redis_url: str, key_prefix: str, peers
) -> None:  # type: ignore[no-untyped-def]
    a = Replica(redis_url, "killed", key_prefix, dict(SETTINGS))
    b = Replica(redis_url, "survivor", key_prefix, dict(SETTINGS))
    await start(a, b)
    try:
        node = await peers(SimNode(a.ws + "/ws/node", (["de"], ["fr"])))
        await node.register()
        browser = await peers(SimBrowser(b.ws + "/ws/session", "de", "fr"))
        await browser.init()
        await browser.speak(5)
        lost = await node.wait_for(is_job)
        await browser.speak(5)
        running = await node.wait_for(lambda m: is_job(m) and m["job_id"] != lost["job_id"])
        # Another node of the pair, free; the two jobs stay where they are.
        other = await peers(SimNode(b.ws + "/ws/node", (["de"], ["fr"])))
        await other.register()

        a.kill()  # kill -9: the node's socket dies, nobody takes the node offline
        with anyio.fail_after(5):
            await node.closed.wait()
        # The node finished `lost` while it had no socket (its result is discarded) and still
        # works on `running`; it comes back with its id through the load balancer.
        back = await peers(SimNode(b.ws + "/ws/node", (["de"], ["fr"]), node_id=node.node_id))
        came_back = time.monotonic()
        assert (await back.register(running_jobs=1))["node_id"] == node.node_id

        moved = await other.wait_type("job_assign", within=10, job_id=lost["job_id"])
        assert moved["attempt_id"] == 2
        await other.send(other.result_for(moved, text_translated="redone"))
        got = await browser.wait_type("translation_result", within=10, job_id=lost["job_id"])
        assert got["text_translated"] == "redone"
        assert time.monotonic() - came_back < 10  # job_timeout_ms is 30 s
        # The job it still ran comes on the new connection and wins over its copy.
        await back.send(back.result_for(running, text_translated="finished"))
        kept = await browser.wait_type("translation_result", within=10, job_id=running["job_id"])
        assert kept["text_translated"] == "finished"
    finally:
        a.stop()
        b.stop()


async def test_the_jobs_of_a_node_that_dies_with_its_replica_move_within_seconds(
    redis_url: str, key_prefix: str, peers
) -> None:  # type: ignore[no-untyped-def]
    a = Replica(redis_url, "killed-2", key_prefix, dict(SETTINGS))
    b = Replica(redis_url, "survivor-2", key_prefix, dict(SETTINGS))
    await start(a, b)
    try:
        node = await peers(SimNode(a.ws + "/ws/node", (["es"], ["it"])))
        await node.register()
        browser = await peers(SimBrowser(b.ws + "/ws/session", "es", "it"))
        await browser.init()
        await browser.speak(5)
        job = await node.wait_for(is_job)
        other = await peers(SimNode(b.ws + "/ws/node", (["es"], ["it"])))
        await other.register()

        a.kill()  # the node goes down with it and never comes back
        killed = time.monotonic()
        moved = await other.wait_type("job_assign", within=10, job_id=job["job_id"])
        assert moved["attempt_id"] == 2
        await other.send(other.result_for(moved))
        await browser.wait_type("translation_result", within=10, job_id=job["job_id"])
        # presence TTL + takeover + scheduling.node_orphan_grace_ms, far below the 30 s timeout
        assert time.monotonic() - killed < 10
    finally:
        a.stop()
        b.stop()
