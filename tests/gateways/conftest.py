"""A replica served inside the test process: real WebSockets on a free local port, real Redis.

No daemon is started: the test talks to :class:`scheduler.replica.Replica` running in its own event
loop, so a gateway rule is tested in milliseconds and its state can be looked at directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from cross_instance.redis_client import AnyRedis
from cross_instance.redis_server import free_port
from scheduler.config import load_config
from scheduler.replica import Replica


@dataclass
class Served:
    replica: Replica
    url: str  # ws://127.0.0.1:<port>

    @property
    def node_url(self) -> str:
        return self.url + "/ws/node"

    @property
    def session_url(self) -> str:
        return self.url + "/ws/session"


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(redis: AnyRedis, redis_url: str, key_prefix: str) -> AsyncIterator[Serve]:
    """Factory: ``await serve(session={...}, scheduling={...})`` starts one more replica on the
    test's Redis and key prefix (so two calls make two replicas of one cluster), with those
    configuration sections merged over the defaults below (``span_exporter``: see
    :class:`~scheduler.replica.Replica`)."""
    replicas: list[Replica] = []
    async with anyio.create_task_group() as tg:

        async def start(*, span_exporter: object = None, **sections: dict[str, Any]) -> Served:
            port = free_port()
            overrides: dict[str, dict[str, Any]] = {
                "server": {"host": "127.0.0.1", "port": port, "drain_unready_ms": 0},
                "redis": {"url": redis_url, "key_prefix": key_prefix},
                # The inbox reader wakes at least this often: the drain at teardown waits for it.
                "runtime": {
                    "instance_id": f"gw{len(replicas)}-{key_prefix}",
                    "inbox_block_ms": 100,
                },
                # A manual cut dispatches at once: no hangover timer between the cut and the job.
                "session": {"hangover_manual_ms": 0, "hangover_auto_ms": 0},
            }
            for section, values in sections.items():
                overrides.setdefault(section, {}).update(values)
            config = load_config(environ={}, overrides=overrides)
            replica = Replica(config, redis, span_exporter=span_exporter)
            await tg.start(replica.run)
            replicas.append(replica)
            return Served(replica, f"ws://127.0.0.1:{port}")

        yield start
        for replica in replicas:
            replica.stop()


@pytest.fixture
async def served(serve: Serve) -> Served:
    return await serve()
