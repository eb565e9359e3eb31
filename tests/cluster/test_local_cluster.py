"""`make cluster-up` end to end: deploy/local/cluster.sh starts Redis, three real replicas and
HAProxy (deploy/haproxy.cfg); sessions and nodes go through the load balancer's public port only;
one replica is stopped with SIGTERM and traffic carries on through the two others."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from cross_instance.redis_server import free_port
from tests.deploy.tools import ROOT, require_tool
from tests.e2e.clients import SimBrowser, SimNode
from tests.e2e.conftest import FAST_SETTINGS
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(300)]

SCRIPT = ROOT / "deploy" / "local" / "cluster.sh"
# One target language per node, so a browser of that pair is served by that node alone: a
# translation after the stop proves that node's reconnect through the load balancer worked.
PAIRS = [("zh", "en"), ("zh", "ja"), ("zh", "ko")]


@dataclass
class LocalCluster:
    run_dir: Path
    public_port: int
    ops_port: int

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.public_port}"

    def get(self, port: int, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def pid(self, name: str) -> int:
        return int((self.run_dir / f"{name}.pid").read_text())

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            for log in sorted(self.run_dir.glob("*.log"))
        )


def _script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require_tool("haproxy")
    run_dir = tmp_path_factory.mktemp("cluster")
    public, ops = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINGUA_", "CLUSTER_"))}
    env.update(FAST_SETTINGS)
    env.update(
        {
            "CLUSTER_DIR": str(run_dir),
            "CLUSTER_PYTHON": sys.executable,
            "CLUSTER_PUBLIC_BIND": f"127.0.0.1:{public}",
            "CLUSTER_OPS_BIND": f"127.0.0.1:{ops}",
            "CLUSTER_REPLICA_PORTS": " ".join(str(free_port()) for _ in range(3)),
            "CLUSTER_REDIS_PORT": str(free_port()),
            "CLUSTER_READY_TIMEOUT_S": "60",
        }
    )
    up = _script("up", env)
    started = LocalCluster(run_dir, public, ops)
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{started.logs()}"
        yield started
    finally:
        down = _script("down", env)
        assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
        assert not list(run_dir.glob("*.pid")), "cluster-down left pid files"


class AnsweringNode(SimNode):
    """A node that answers every job_assign with a result at once."""

    async def on_frame(self, message: dict[str, Any], at: float) -> bool:
        if message.get("type") == "job_assign":
            await self.send(self.result_for(message))
        return True


@pytest.fixture
async def connect() -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:

        async def make(peer: SimNode | SimBrowser) -> Any:
            await peer.connect()
            tg.start_soon(peer.pump)
            stack.push_async_callback(peer.close)
            return peer

        yield make
        await stack.aclose()
        tg.cancel_scope.cancel()


async def _utterance_translated(browser: SimBrowser) -> None:
    index = len(browser.of_type("translation_result"))
    await browser.speak(5)
    await browser.wait_for(
        lambda m: m.get("type") == "translation_result" and m["utterance_index"] == index,
        within=20,
    )


def test_only_websockets_are_public_and_ops_routes_are_internal(cluster: LocalCluster) -> None:
    for path in (
        "/metrics",
        "/api/v1/cluster",
        "/api/v1/stats",
        "/dashboard",
        "/readyz",
        "/health",
    ):
        status, _ = cluster.get(cluster.public_port, path)
        assert status == 404, f"public {path}: {status}"
    assert cluster.get(cluster.ops_port, "/readyz")[0] == 200
    status, body = cluster.get(cluster.ops_port, "/metrics")
    assert status == 200 and b"lingua_ready 1.0" in body
    status, body = cluster.get(cluster.ops_port, "/api/v1/cluster")
    assert status == 200
    live = {r["instance_id"] for r in orjson.loads(body)["replicas"]}
    assert live == {"local-1", "local-2", "local-3"}


async def test_traffic_carries_on_when_a_replica_stops(cluster: LocalCluster, connect) -> None:  # type: ignore[no-untyped-def]
    nodes = [await connect(AnsweringNode(cluster.ws + "/ws/node", ([s], [t]))) for s, t in PAIRS]
    for node in nodes:
        await node.register()
    browsers = [await connect(SimBrowser(cluster.ws + "/ws/session", s, t)) for s, t in PAIRS]
    for browser in browsers:
        await browser.init()
    for browser in browsers:
        await _utterance_translated(browser)

    # SIGTERM replica-1: it drains (sockets closed with 1012) and exits.
    pid = cluster.pid("replica-1")
    os.kill(pid, signal.SIGTERM)
    await until(lambda: not _running(pid), 30)
    peers: list[SimNode | SimBrowser] = [*nodes, *browsers]
    dropped = [p for p in peers if p.closed.is_set()]
    # leastconn spreads the six sockets over the three replicas: replica-1 held some.
    assert dropped, f"no socket was on replica-1\n{cluster.logs()}"
    assert {p.closed_code for p in dropped} == {1012}

    # Clients reconnect through the load balancer, as the real ones do on 1012: a node with its
    # node_id, a browser with a new session.
    for i, node in enumerate(nodes):
        if node.closed.is_set():
            again = await connect(
                AnsweringNode(
                    cluster.ws + "/ws/node",
                    node_id=node.node_id,
                    langs=([PAIRS[i][0]], [PAIRS[i][1]]),
                )
            )
            assert (await again.register())["node_id"] == node.node_id
            nodes[i] = again
    for i, browser in enumerate(browsers):
        if browser.closed.is_set():
            browsers[i] = await connect(SimBrowser(cluster.ws + "/ws/session", *PAIRS[i]))
            await browsers[i].init()

    # Every pair is still served: each browser's new utterance is translated by its pair's node.
    for browser in browsers:
        await _utterance_translated(browser)
    status, body = cluster.get(cluster.ops_port, "/api/v1/cluster")
    assert status == 200
    assert {r["instance_id"] for r in orjson.loads(body)["replicas"]} == {"local-2", "local-3"}


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Our child's child, reaped by init once it exits; a zombie until then counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
