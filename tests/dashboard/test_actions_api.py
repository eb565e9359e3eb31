"""The DLQ actions of the API: refused without a configured token (403) or with a wrong one
(401), done with the right one; logged with what was done, never with the token. A real server
(websockets' ``serve`` with the routes) and real HTTP requests."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest
from websockets.asyncio.server import serve

from scheduler.cluster_view import DlqAction, DlqActionName, DlqActionResult
from scheduler.http_routes import HttpRoutes

TOKEN = "s3cret-token-for-the-test"


@asynccontextmanager
async def server(admin_token: str, calls: list[tuple[str, DlqAction]]) -> AsyncIterator[str]:
    async def dlq_action(action: DlqActionName, chosen: DlqAction) -> DlqActionResult:
        calls.append((action, chosen))
        return DlqActionResult(action=action, done=list(chosen.ids), skipped=[], missing=[])

    async def unused() -> Any:
        raise AssertionError("not called")

    routes = HttpRoutes(
        readiness=unused, metrics=lambda: b"", cluster=unused, stats=unused,
        dlq_action=dlq_action, admin_token=admin_token,
    )  # fmt: skip
    async with serve(
        lambda ws: ws.close(), "127.0.0.1", 0, process_request=routes.process_request
    ) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}"


async def call(url: str, method: str = "POST", token: str | None = None) -> tuple[int, Any]:
    def send() -> tuple[int, Any]:
        request = urllib.request.Request(url, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, msgspec.json.decode(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, msgspec.json.decode(exc.read())

    return await anyio.to_thread.run_sync(send)


@pytest.mark.anyio
async def test_without_a_configured_token_the_actions_are_refused_with_403() -> None:
    calls: list[tuple[str, DlqAction]] = []
    async with server("", calls) as base:
        status, body = await call(base + "/api/v1/dlq/replay?all=1", token="")
        assert status == 403 and body["error"] == "actions_disabled", body
        assert "server.admin_token" in body["message"]
        status, _ = await call(base + "/api/v1/dlq/purge?all=1", token="anything")
        assert status == 403
    assert calls == []


@pytest.mark.anyio
async def test_a_missing_or_wrong_token_is_refused_with_401() -> None:
    calls: list[tuple[str, DlqAction]] = []
    async with server(TOKEN, calls) as base:
        for token in (None, "", TOKEN[:-1], TOKEN + "x", "s3cret"):
            status, body = await call(base + "/api/v1/dlq/purge?all=1", token=token)
            assert (status, body["error"]) == (401, "bad_token"), token
    assert calls == []


@pytest.mark.anyio
async def test_the_right_token_replays_and_purges_what_was_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[tuple[str, DlqAction]] = []
    caplog.set_level(logging.INFO, logger="lingua.http")
    async with server(TOKEN, calls) as base:
        status, body = await call(base + "/api/v1/dlq/replay?id=1-0&id=m%3C1%3E", token=TOKEN)
        assert status == 200 and body["done"] == ["1-0", "m<1>"], body
        status, body = await call(base + "/api/v1/dlq/purge?all=1", token=TOKEN)
        assert status == 200 and body["action"] == "purge"
    assert calls == [
        ("replay", DlqAction(ids=["1-0", "m<1>"], all=False)),
        ("purge", DlqAction(ids=[], all=True)),
    ]
    logged = [r.getMessage() for r in caplog.records]
    assert any("DLQ replay" in line and "1-0" in line for line in logged), logged
    assert any("DLQ purge" in line and "all entries" in line for line in logged), logged
    assert not any(TOKEN in line for line in logged)


@pytest.mark.anyio
async def test_usage_errors_and_methods() -> None:
    calls: list[tuple[str, DlqAction]] = []
    async with server(TOKEN, calls) as base:
        assert (await call(base + "/api/v1/dlq/replay", token=TOKEN))[0] == 400
        assert (await call(base + "/api/v1/dlq/replay?all=1&id=1-0", token=TOKEN))[0] == 400
        assert (await call(base + "/api/v1/dlq/replay?all=1", "GET", TOKEN))[0] == 405
        assert (await call(base + "/api/v1/cluster", "POST", TOKEN))[0] == 405
    assert calls == []
