"""Replica lifecycle end to end: graceful SIGTERM hand-off, and the zero-setup embedded Redis."""

from __future__ import annotations

import anyio
import pytest

from tests.e2e.clients import SimBrowser, SimNode
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_sigterm_of_the_node_replica_hands_the_node_over(
    redis_url: str, key_prefix: str, peers
) -> None:  # type: ignore[no-untyped-def]
    # A job timeout far beyond the hand-off: the utterance must complete because the node came
    # back with its result, not be moved by a timeout that a slow drain under load can reach.
    settings = {**FAST_SETTINGS, "LINGUA_SCHEDULING__JOB_TIMEOUT_MS": "60000"}
    a = Replica(redis_url, "drain-a", key_prefix, settings)
    b = Replica(redis_url, "drain-b", key_prefix, settings)
    await anyio.to_thread.run_sync(a.start)
    await anyio.to_thread.run_sync(b.start)
    try:
        node = await peers(SimNode(a.ws + "/ws/node", (["zh"], ["en"])))
        await node.register()
        browser = await peers(SimBrowser(b.ws + "/ws/session", "zh", "en"))
        await browser.init()
        await browser.speak(5)
        job = await node.wait_for(lambda m: m.get("type") == "job_assign")

        with anyio.fail_after(15):
            code = await anyio.to_thread.run_sync(a.terminate)
        assert code == 0, a.log()
        # The node was told to reconnect (1012, service restart), as the real agent does on close.
        with anyio.fail_after(5):
            await node.closed.wait()
        assert node.closed_code == 1012

        # It reconnects through the load balancer (here: straight to b) with its id, still
        # working on the job (its heartbeat says so, as the real node's does).
        again = await peers(SimNode(b.ws + "/ws/node", (["zh"], ["en"]), node_id=node.node_id))
        assert (await again.register(running_jobs=1))["node_id"] == node.node_id
        await again.send(again.result_for(job))
        got = await browser.wait_type("translation_result", within=15)
        assert got["job_id"] == job["job_id"]
        assert b.get("/readyz")[0] == 200
    finally:
        a.stop()
        b.stop()


async def test_serve_without_redis_starts_an_embedded_one(peers) -> None:  # type: ignore[no-untyped-def]
    replica = Replica("", "embedded", "lingua")
    await anyio.to_thread.run_sync(replica.start)
    try:
        node = await peers(SimNode(replica.ws + "/ws/node", (["zh"], ["en"])))
        await node.register()
        browser = await peers(SimBrowser(replica.ws + "/ws/session", "zh", "en"))
        await browser.init()
        await browser.speak(5)
        job = await node.wait_for(lambda m: m.get("type") == "job_assign")
        await node.send(node.result_for(job))
        await browser.wait_type("translation_result")
        assert "embedded redis-server" in replica.log(lines=400)
        code = await anyio.to_thread.run_sync(replica.terminate)
        assert code == 0, replica.log()
    finally:
        replica.stop()


async def test_connections_beyond_the_limit_are_told_to_try_again_later(
    redis_url: str, key_prefix: str, peers
) -> None:  # type: ignore[no-untyped-def]
    replica = Replica(
        redis_url, "full", key_prefix, {**FAST_SETTINGS, "LINGUA_SERVER__MAX_CONNECTIONS": "1"}
    )
    await anyio.to_thread.run_sync(replica.start)
    try:
        first = await peers(SimBrowser(replica.ws + "/ws/session", "zh", "en"))
        await first.init()
        second = await peers(SimBrowser(replica.ws + "/ws/session", "zh", "en"))
        with anyio.fail_after(5):
            await second.closed.wait()
        assert second.closed_code == 1013
        # The first session is unaffected.
        await first.send(
            {"type": "client_heartbeat", "session_id": first.session_id, "timestamp": 1}
        )
        await first.wait_type("server_heartbeat")
    finally:
        replica.stop()
