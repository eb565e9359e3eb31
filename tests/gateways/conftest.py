"""A replica served inside the test process: real WebSockets on a free local port, real Redis.

No daemon is started: the test talks to :class:`scheduler.replica.Replica` running in its own event
loop, so a gateway rule is tested in milliseconds and its state can be looked at directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

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


@pytest.fixture
async def served(redis: AnyRedis, redis_url: str, key_prefix: str) -> AsyncIterator[Served]:
    port = free_port()
    config = load_config(
        environ={},
        overrides={
            "server": {"host": "127.0.0.1", "port": port, "drain_unready_ms": 0},
            "redis": {"url": redis_url, "key_prefix": key_prefix},
            # The inbox reader wakes at least this often: the drain at teardown waits for it.
            "runtime": {"instance_id": f"gw-{key_prefix}", "inbox_block_ms": 100},
            # A manual cut dispatches at once: no hangover timer between the cut and the job.
            "session": {"hangover_manual_ms": 0, "hangover_auto_ms": 0},
        },
    )
    replica = Replica(config, redis)
    async with anyio.create_task_group() as tg:
        await tg.start(replica.run)
        yield Served(replica, f"ws://127.0.0.1:{port}")
        replica.stop()
