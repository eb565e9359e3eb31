"""The bundled HAProxy (deploy/haproxy.cfg) does not write a node's ``?token=`` into its log:
a real haproxy in front of a real replica, a real node registering through it."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio
import pytest
from anyio.abc import Process

from cross_instance.redis_server import free_port
from tests.deploy.tools import ROOT, require_tool
from tests.e2e.clients import SimNode
from tests.gateways.conftest import Served, serve
from tests.waiting import until

__all__ = ["serve"]

pytestmark = pytest.mark.anyio

Serve = Callable[..., Awaitable[Served]]

SECRET = "node-secret-in-the-url-0123456789"


async def _lines(process: Process, into: list[str], seen: anyio.Event, needle: str) -> None:
    """haproxy's log (stdout) into ``into``; ``seen`` is set at the first line with ``needle``."""
    assert process.stdout is not None
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk
        *done, buffer = buffer.split(b"\n")
        into.extend(line.decode(errors="replace") for line in done)
        if any(needle in line for line in into):
            seen.set()


async def test_haproxy_logs_the_path_of_a_node_socket_without_its_token(serve: Serve) -> None:
    haproxy = require_tool("haproxy")
    served = await serve(auth={"node_secrets": [SECRET]})
    replica_port = served.url.rsplit(":", 1)[1]
    lb_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LB_", "LINGUA_REPLICA_"))},
        "LB_PUBLIC_BIND": f"127.0.0.1:{lb_port}",
        "LB_OPS_BIND": f"127.0.0.1:{free_port()}",
        "LB_MAXCONN": "256",
        "LINGUA_REPLICA_1": f"127.0.0.1:{replica_port}",
        # Nothing listens there: health checks take them out, redispatch covers the first tries.
        "LINGUA_REPLICA_2": f"127.0.0.1:{free_port()}",
        "LINGUA_REPLICA_3": f"127.0.0.1:{free_port()}",
    }
    lines: list[str] = []
    logged_node = anyio.Event()
    process = await anyio.open_process(
        [haproxy, "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        env=env,
        stderr=None,
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_lines, process, lines, logged_node, "/ws/node")
            node = SimNode(f"ws://127.0.0.1:{lb_port}/ws/node?token={SECRET}")

            async def connected() -> bool:
                try:
                    await node.connect()  # refused while haproxy binds its port
                except OSError:
                    return False
                return True

            await until(connected, 15)
            tg.start_soon(node.pump)
            await node.register()
            await node.close()
            # haproxy writes an HTTP log line when the connection ends.
            with anyio.fail_after(10):
                await logged_node.wait()
            tg.cancel_scope.cancel()
    finally:
        process.terminate()
        await process.wait()
    [logged] = [line for line in lines if "/ws/node" in line]
    assert "GET /ws/node HTTP/1.1" in logged
    assert SECRET not in "\n".join(lines) and "token=" not in "\n".join(lines)
