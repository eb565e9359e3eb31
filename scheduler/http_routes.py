"""The HTTP routes served on the WebSocket port (websockets' ``process_request`` hook).

``/health`` answers ``OK`` as the original did (original-protocol.md §1); ``/livez`` says the event
loop is answering; ``/readyz`` is 503 while starting, draining or when Redis does not answer, so a
load balancer stops sending new connections; ``/metrics`` is Prometheus text; ``/api/v1/cluster``
and ``/api/v1/stats`` are JSON; ``/dashboard`` is a static page polling the cluster API.
Upgrade requests to ``/ws/node`` and ``/ws/session`` pass through to the WebSocket handshake.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["WS_PATHS", "HttpRoutes"]

WS_PATHS = frozenset({"/ws/node", "/ws/session"})


@dataclass
class HttpRoutes:
    readiness: Callable[[], Awaitable[tuple[bool, str]]]
    metrics: Callable[[], bytes]
    cluster: Callable[[], Awaitable[dict[str, Any]]]
    stats: Callable[[], Awaitable[dict[str, Any]]]

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path in WS_PATHS:
            return None
        if path == "/health" or path == "/livez":
            return _text(HTTPStatus.OK, "OK")
        if path == "/readyz":
            ready, why = await self.readiness()
            return _text(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, why)
        if path == "/metrics":
            return _response(
                HTTPStatus.OK, self.metrics(), "text/plain; version=0.0.4; charset=utf-8"
            )
        if path == "/api/v1/cluster":
            return await _json_or_503(self.cluster)
        if path == "/api/v1/stats":
            return await _json_or_503(self.stats)
        if path in ("/dashboard", "/"):
            page = resources.files("scheduler").joinpath("dashboard.html").read_bytes()
            return _response(HTTPStatus.OK, page, "text/html; charset=utf-8")
        return _text(HTTPStatus.NOT_FOUND, "not found")


async def _json_or_503(producer: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
    try:
        body = await producer()
    except Exception as exc:  # the route must answer even when Redis does not
        return _response(
            HTTPStatus.SERVICE_UNAVAILABLE,
            orjson.dumps({"error": type(exc).__name__, "message": str(exc)}),
            "application/json",
        )
    return _response(HTTPStatus.OK, orjson.dumps(body), "application/json")


def _text(status: HTTPStatus, text: str) -> Response:
    return _response(status, (text + "\n").encode(), "text/plain; charset=utf-8")


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)
