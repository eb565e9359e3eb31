"""The operator surface of a real ``serve`` replica, over real HTTP and WebSockets
(docs/security.md, "Operator surface"):

- with ``server.ops_port`` the public port answers 404 for ``/metrics``, ``/api/v1/*`` and the
  dashboard (and counts it), keeps ``/ws/*`` and the health routes; the operator port serves
  them and refuses ``/ws/*``;
- with ``server.ops_read_token`` the reads need it (or the admin token): 401 without or with a
  wrong one; the read token cannot act on the DLQ (403), the admin token can;
- with every switch off, one port serves everything without a token, as before.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from cross_instance.config import RedisConfig
from cross_instance.redis_server import free_port
from tests.cli.conftest import clean_env, run_cli
from tests.dashboard.test_dashboard_browser import chromium, require_chromium
from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ADMIN = "ops-surface-admin-token"
READ = "ops-surface-read-token"
OPS_READS = ["/metrics", "/api/v1/cluster", "/api/v1/stats"]
OPS_ROUTES = [*OPS_READS, "/dashboard", "/"]


def fetch(url: str, method: str = "GET", token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def split_replica(redis_config: RedisConfig) -> Iterator[tuple[Replica, str]]:
    ops_port = free_port()
    settings = {
        **FAST_SETTINGS,
        "LINGUA_SERVER__OPS_PORT": str(ops_port),
        "LINGUA_SERVER__OPS_HOST": "127.0.0.1",
        "LINGUA_SERVER__ADMIN_TOKEN": ADMIN,
        "LINGUA_SERVER__OPS_READ_TOKEN": READ,
    }
    replica = Replica(redis_config.url, "ops-split", redis_config.key_prefix, settings)
    try:
        yield replica.start(), f"http://127.0.0.1:{ops_port}"
    finally:
        replica.stop()


async def test_the_public_port_hides_the_operator_routes(
    split_replica: tuple[Replica, str],
) -> None:
    replica, ops = split_replica
    for path in OPS_ROUTES:
        for token in (None, READ, ADMIN):
            assert fetch(replica.http + path, token=token)[0] == 404, (path, token)
    for path in ("/api/v1/dlq/purge?all=1", "/api/v1/dlq/replay?all=1"):
        assert fetch(replica.http + path, "POST", ADMIN)[0] == 404, path
    for path in ("/readyz", "/livez", "/health"):
        assert fetch(replica.http + path)[0] == 200, path
    async with connect(replica.ws + "/ws/session") as ws:  # the clients' door stays open
        await ws.ping()
    status, body = fetch(ops + "/metrics", token=READ)
    assert status == 200
    refused = 'lingua_ops_requests_refused_total{reason="other_listener"} '
    [line] = [x for x in body.decode().splitlines() if x.startswith(refused)]
    assert float(line.split()[-1]) == len(OPS_ROUTES) * 3 + 2


async def test_the_operator_port_needs_its_tokens_and_refuses_sockets(
    split_replica: tuple[Replica, str], redis_config: RedisConfig
) -> None:
    _, ops = split_replica
    for path in OPS_READS:
        for wrong in (None, "", READ[:-1], ADMIN + "x", "Basic " + READ):
            status, body = fetch(ops + path, token=wrong)
            assert status == 401 and b"bad_token" in body, (path, wrong)
        assert fetch(ops + path, token=READ)[0] == 200, path
        assert fetch(ops + path, token=ADMIN)[0] == 200, path
    # The page is a static shell (no data in it): open; its reads send the token typed in it.
    assert fetch(ops + "/dashboard")[0] == 200
    for path in ("/readyz", "/livez", "/health"):  # load balancers and probes need no token
        assert fetch(ops + path)[0] == 200, path
    # Actions: the read token is not enough (403), a wrong one is 401, the admin token acts.
    purge = ops + "/api/v1/dlq/purge?all=1"
    status, body = fetch(purge, "POST", READ)
    assert status == 403 and b"read_only_token" in body
    assert fetch(purge, "POST", None)[0] == 401
    assert fetch(purge, "POST", READ + "x")[0] == 401
    status, body = fetch(purge, "POST", ADMIN)
    assert status == 200 and b'"action":"purge"' in body, body
    # Recorded in the operator audit, as the CLI's actions are (only the one done).
    env = clean_env(
        LINGUA_REDIS_URL=redis_config.url, LINGUA_REDIS__KEY_PREFIX=redis_config.key_prefix
    )
    done = await anyio.to_thread.run_sync(lambda: run_cli("ops-log", "--json", env=env))
    [entry] = json.loads(done.stdout)
    assert (entry["source"], entry["action"], entry["target"]) == (
        "api",
        "dlq purge",
        "all entries",
    )
    assert entry["host"] == "ops-split" and entry["outcome"] == "0 done, 0 skipped, 0 missing"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ops.replace("http", "ws") + "/ws/session"):
            pass
    assert refused.value.response.status_code == 404
    status, body = fetch(ops + "/metrics", token=ADMIN)
    text = body.decode()
    assert 'lingua_ops_requests_refused_total{reason="bad_token"} 17.0' in text
    assert 'lingua_ops_requests_refused_total{reason="forbidden"} 1.0' in text
    assert 'lingua_ops_requests_refused_total{reason="other_listener"} 1.0' in text  # the socket


async def test_with_every_switch_off_one_port_serves_everything_openly(
    redis_config: RedisConfig,
) -> None:
    replica = Replica(redis_config.url, "ops-default", redis_config.key_prefix, FAST_SETTINGS)
    try:
        replica.start()
        for path in [*OPS_ROUTES, "/readyz"]:
            assert fetch(replica.http + path)[0] == 200, path
        # Actions stay disabled without an admin token, as before.
        assert fetch(replica.http + "/api/v1/dlq/purge?all=1", "POST", "x")[0] == 403
        async with connect(replica.ws + "/ws/session") as ws:
            await ws.ping()
    finally:
        replica.stop()


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": False})  # Playwright drives its driver on plain asyncio


async def test_the_dashboard_on_the_operator_port_reads_with_the_token_typed_in(
    split_replica: tuple[Replica, str],
) -> None:
    require_chromium()
    _, ops = split_replica
    async with chromium() as chrome:
        page = await chrome.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(ops + "/dashboard")
        # No token yet: the read is refused and the page says so, with the field to type it in.
        await page.wait_for_function(
            "document.getElementById('err').textContent.includes('token is missing')"
        )
        assert await page.is_enabled("#token")
        await page.fill("#token", READ)
        await page.dispatch_event("#token", "change")
        await page.wait_for_function(
            "document.querySelector('.card[data-field=replicas] b')?.textContent === '1'"
            " && document.getElementById('err').textContent === ''"
        )
        assert errors == []
