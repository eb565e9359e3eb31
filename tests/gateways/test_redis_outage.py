"""Redis restarted or stalled under a replica (issue 12, build 2): sockets stay open, a node's
result and a session's dispatch wait for Redis and then go through (or the session gets an
explicit error after ``redis.outage_wait_ms``), readiness is false meanwhile, and a deadline that
passed only because Redis stalled does not redo answered work.

Each test runs its own redis-server (AOF on, like production), which it stops and starts on the
same port, or pauses with ``CLIENT PAUSE``.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis.asyncio import Redis

from tests.chaos.cluster import ChaosRedis
from tests.e2e.clients import SimBrowser, SimNode, wait_any
from tests.gateways.conftest import Serve, Served
from tests.waiting import until

pytestmark = pytest.mark.anyio

SRC, TGT = "zh", "en"
Connect = Callable[[Any], Awaitable[Any]]


@pytest.fixture
def aof_redis() -> Iterator[ChaosRedis]:
    server = ChaosRedis().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(aof_redis: ChaosRedis) -> str:
    """Every fixture of this module (the replica's client, its runtime) uses this Redis."""
    return aof_redis.url


class Outage:
    """Redis stopped (SIGTERM: the AOF is flushed) and started again on its port and data."""

    def __init__(self, server: ChaosRedis) -> None:
        self.server = server
        self.workdir = ""
        self.down = False

    async def stop(self) -> None:
        self.workdir = self.server.workdir
        self.server._owns_workdir = False
        await anyio.to_thread.run_sync(self.server.stop)
        self.down = True

    async def start(self) -> None:
        self.server.workdir = self.workdir
        self.server._owns_workdir = True
        await anyio.to_thread.run_sync(self.server.start)
        self.down = False


@pytest.fixture
async def outage(aof_redis: ChaosRedis) -> AsyncIterator[Outage]:
    out = Outage(aof_redis)
    try:
        yield out
    finally:
        if out.down:  # the teardown of the replica and of the keys needs Redis
            await out.start()


def readyz(served: Served) -> int:
    url = served.url.replace("ws://", "http://") + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def waiting(served: Served) -> bool:
    return sample(served, "lingua_redis_waiting") > 0


async def is_ready(served: Served) -> bool:
    return await anyio.to_thread.run_sync(readyz, served) == 200


def sample(served: Served, name: str, **labels: str) -> float:
    return served.replica.registry.get_sample_value(name, labels) or 0.0


async def nodes_and_browser(served: Served, peers: Connect) -> tuple[SimNode, SimNode, SimBrowser]:
    """Two nodes for the pair (a redo would reach the other one) and one session."""
    a: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await a.register()
    b: SimNode = await peers(SimNode(served.node_url, ([SRC], [TGT])))
    await b.register()
    browser: SimBrowser = await peers(SimBrowser(served.session_url, SRC, TGT))
    await browser.init()
    return a, b, browser


def is_job(message: dict[str, Any]) -> bool:
    return message.get("type") == "job_assign"


async def test_a_result_sent_while_redis_restarts_reaches_the_session_after_it(
    served: Served, peers: Connect, outage: Outage
) -> None:
    a, b, browser = await nodes_and_browser(served, peers)
    await browser.speak(10)
    node, job = await first_job(a, b)
    other = b if node is a else a
    await outage.stop()
    await node.send(node.result_for(job))
    # the result waits for Redis (or, before issue 12, killed the node's socket: 1011)
    await until(lambda: waiting(served) or node.closed_code is not None)
    assert node.closed_code is None
    assert await anyio.to_thread.run_sync(readyz, served) == 503
    await outage.start()
    got = await browser.wait_type("translation_result", job_id=job["job_id"])
    assert got["text_translated"] == "Hello"
    assert node.closed_code is None and other.closed_code is None
    assert not [m for m in other.received if is_job(m)], "the answered job was redone"
    assert sample(served, "lingua_redis_waits_total", path="result", outcome="through") == 1
    await until(lambda: is_ready(served))  # ready again once Redis answers
    assert all(n.running == 0 for n in await served.replica.core.list_nodes())


async def first_job(a: SimNode, b: SimNode) -> tuple[SimNode, dict[str, Any]]:
    i, job = await wait_any([a, b], is_job)
    return (a, b)[i], job


async def test_a_dispatch_during_a_redis_restart_waits_for_redis_and_goes_through(
    served: Served, peers: Connect, outage: Outage
) -> None:
    a, b, browser = await nodes_and_browser(served, peers)
    await outage.stop()
    await browser.speak(10)  # the cut: its dispatch meets Redis down
    # it waits for Redis (or, before issue 12, answered INTERNAL_ERROR at once)
    await until(lambda: waiting(served) or bool(browser.of_type("error")))
    assert not browser.of_type("error"), browser.of_type("error")
    assert await anyio.to_thread.run_sync(readyz, served) == 503
    await outage.start()
    node, job = await first_job(a, b)
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])
    assert not browser.of_type("error"), browser.of_type("error")
    assert browser.closed_code is None
    assert sample(served, "lingua_redis_waits_total", path="dispatch", outcome="through") == 1


async def test_a_dispatch_past_the_outage_wait_gets_an_explicit_error_and_the_socket_stays(
    serve: Serve, peers: Connect, outage: Outage
) -> None:
    served = await serve(redis={"outage_wait_ms": 300})
    _, _, browser = await nodes_and_browser(served, peers)
    await outage.stop()
    await browser.speak(10)
    error = await browser.wait_type("error")
    assert error["code"] == "SCHEDULER_DEPENDENCY_DOWN"
    assert "say it again" in error["message"]
    [event] = [m for m in browser.of_type("ui_event") if m.get("event") == "ERROR"]
    assert event["error_code"] == "SCHEDULER_DEPENDENCY_DOWN"
    assert sample(served, "lingua_redis_waits_total", path="dispatch", outcome="gave_up") == 1
    # the next cut, still in the outage: told too (its ui_event; the repeated error frame is
    # throttled), after one try rather than another full wait
    await browser.speak(10)
    await browser.wait_for(lambda m: m.get("event") == "ERROR" and m.get("utterance_index") == 1)
    assert sample(served, "lingua_redis_waits_total", path="dispatch", outcome="gave_up") == 2
    await outage.start()
    # the socket is open: the session is answered
    await browser.send(
        {"type": "client_heartbeat", "session_id": browser.session_id, "timestamp": 1}
    )
    await browser.wait_type("server_heartbeat")
    assert browser.closed_code is None


async def _blocked_scripts(client: Redis) -> int:
    """Script calls waiting in the pause (``CLIENT PAUSE WRITE`` leaves CLIENT LIST readable)."""
    return sum(1 for c in await client.client_list() if "b" in c["flags"] and c["cmd"] == "evalsha")


async def test_a_result_queued_behind_a_stall_past_its_deadline_is_delivered_not_redone(
    serve: Serve, peers: Connect, redis_url: str
) -> None:
    """The node answers at once, but Redis stalls (CLIENT PAUSE) until the job's deadline has
    passed: the sweep queued before the result must not move the answered job."""
    served = await serve(
        scheduling={"job_timeout_ms": 1000, "sweep_interval_ms": 20, "stall_ms": 300}
    )
    a, b, browser = await nodes_and_browser(served, peers)
    await browser.speak(10)
    node, job = await first_job(a, b)
    other = b if node is a else a
    [info] = await served.replica.core.list_jobs()
    admin = Redis.from_url(redis_url, decode_responses=True)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
        await until(lambda: _blocked_scripts_ge(admin, 1))  # a sweep waits in the pause
        await node.send(node.result_for(job))
        await until(lambda: _blocked_scripts_ge(admin, 2))  # the completion waits behind it
        await until(lambda: time.time() * 1000 > info.deadline_ms + 300)
        await admin.execute_command("CLIENT", "UNPAUSE")
    finally:
        await admin.aclose()
    got = await browser.wait_type("translation_result", job_id=job["job_id"])
    assert got["text_translated"] == "Hello"
    assert not [m for m in other.received if is_job(m)], "the answered job was redone"
    assert not browser.of_type("error"), browser.of_type("error")
    assert sample(served, "lingua_jobs_total", event="result_refused") == 0
    await until(lambda: sample(served, "lingua_stall_extended_total", kind="job") >= 1)
    assert all(n.running == 0 for n in await served.replica.core.list_nodes())  # slot freed


async def _blocked_scripts_ge(client: Redis, count: int) -> bool:
    return await _blocked_scripts(client) >= count
