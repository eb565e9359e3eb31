"""Fixtures: real ``serve`` replicas on a real Redis, started per test with that test's settings.

Session timing is left at its defaults (pause, hangovers, max duration), so the recorded client
timelines meet the scheduler they were recorded against; only what makes failure paths finish in
seconds (sweep, presence, drain) is shortened, plus what a test asks for.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from tests.e2e.daemons import Replica
from tests.realclients.peers import RealBrowser, RealNode

BASE_SETTINGS = {
    "scheduling.sweep_interval_ms": 100,
    "runtime.presence_ttl_ms": 1500,
    "runtime.presence_refresh_ms": 300,
    "runtime.drain_grace_ms": 3000,
    "runtime.route_grace_ms": 2000,
    "server.drain_unready_ms": 100,
}

StartReplicas = Callable[..., Awaitable[list[Replica]]]


def _env(settings: dict[str, Any]) -> dict[str, str]:
    """``{"session.room_idle_ms": 2000}`` as the ``LINGUA_SESSION__ROOM_IDLE_MS`` variables."""
    env = {}
    for key, value in settings.items():
        section, name = key.split(".")
        env[f"LINGUA_{section.upper()}__{name.upper()}"] = str(value)
    return env


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[StartReplicas]:
    """``await replicas(count, **{"section.key": value})``: started replicas of one cluster."""
    prefix = f"rc{secrets.token_hex(4)}"
    started: list[Replica] = []

    async def start(count: int = 1, settings: dict[str, Any] | None = None) -> list[Replica]:
        env = _env({**BASE_SETTINGS, **(settings or {})})
        batch = [Replica(redis_url, f"rc{len(started) + i}", prefix, env) for i in range(count)]
        started.extend(batch)
        async with anyio.create_task_group() as tg:
            for replica in batch:
                tg.start_soon(anyio.to_thread.run_sync, replica.start)
        return batch

    try:
        yield start
    finally:
        async with anyio.create_task_group() as tg:
            for replica in started:
                tg.start_soon(anyio.to_thread.run_sync, replica.stop)


class Clients:
    """Makes connected real-client peers whose readers run for the test's duration."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self.tg = tg
        self.peers: list[RealNode | RealBrowser] = []

    def node(self, replica: Replica, kind: type[RealNode] = RealNode, **kwargs: Any) -> RealNode:
        node = kind(replica.ws + "/ws/node", self.tg, **kwargs)
        self.peers.append(node)
        return node

    async def browser(
        self, replica: Replica, timeline: str = "browser_manual_cuts.json"
    ) -> RealBrowser:
        browser = RealBrowser(replica.ws + "/ws/session", self.tg, timeline)
        self.peers.append(browser)
        await browser.init()
        return browser


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    async with anyio.create_task_group() as tg:
        made = Clients(tg)
        yield made
        for peer in made.peers:
            await peer.close()
        tg.cancel_scope.cancel()
