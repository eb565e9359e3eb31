"""The HTTP routes served on the WebSocket port (websockets' ``process_request`` hook).

``/health`` answers ``OK`` as the original did (docs/protocol.md; the original's §1); ``/livez`` says the event
loop is answering; ``/readyz`` is 503 while starting, draining or when Redis does not answer, so a
load balancer stops sending new connections; ``/metrics`` is Prometheus text; ``/api/v1/cluster``
(:class:`~scheduler.cluster_view.ClusterView`) and ``/api/v1/stats`` are JSON; ``/dashboard`` is a
static page polling the cluster API. Upgrade requests to ``/ws/node`` and ``/ws/session`` pass
through to the WebSocket handshake.

``POST /api/v1/dlq/replay`` and ``POST /api/v1/dlq/purge`` act on dead letters named in the query
string (``?id=...&id=...`` or ``?all=1``: websockets' parser refuses request bodies). They need
``Authorization: Bearer <server.admin_token>``; with no token configured they answer 403. Each
action is logged with what was done, never with the token.

The operator surface (docs/security.md, "Operator surface"): with ``server.ops_read_token`` set,
the reads (``/metrics``, ``/api/v1/cluster``, ``/api/v1/stats``) need that token or the admin
token (401 without, 403 for a read token on an action). ``listener`` says which routes one
listener serves: ``"both"`` (one port, as before), ``"public"`` (``/ws/*`` and the health routes;
the operator routes answer 404), ``"ops"`` (the operator routes and the health routes; ``/ws/*``
answers 404). ``/health``, ``/livez`` and ``/readyz`` stay open on every listener.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qs

import msgspec
import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from scheduler.cluster_view import ClusterView, DlqAction, DlqActionName, DlqActionResult

__all__ = ["DLQ_ACTIONS", "OPS_READS", "WS_PATHS", "HttpRoutes", "Listener"]

log = logging.getLogger("lingua.http")

WS_PATHS = frozenset({"/ws/node", "/ws/session"})
DLQ_ACTIONS: dict[str, DlqActionName] = {
    "/api/v1/dlq/replay": "replay",
    "/api/v1/dlq/purge": "purge",
}
OPS_READS = frozenset({"/metrics", "/api/v1/cluster", "/api/v1/stats"})
_OPS_PAGES = frozenset({"/dashboard", "/"})  # a static page: no data in it, open
Listener = Literal["both", "public", "ops"]


@dataclass
class HttpRoutes:
    readiness: Callable[[], Awaitable[tuple[bool, str]]]
    metrics: Callable[[], bytes]
    cluster: Callable[[], Awaitable[ClusterView]]
    stats: Callable[[], Awaitable[dict[str, Any]]]
    dlq_action: Callable[[DlqActionName, DlqAction], Awaitable[DlqActionResult]]
    admin_token: str = ""
    read_token: str = ""
    listener: Listener = "both"
    # Called with the reason of every refused operator request (a metric label).
    refused: Callable[[str], None] = lambda reason: None

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path, _, query = request.path.partition("?")
        ops_route = path in DLQ_ACTIONS or path in OPS_READS or path in _OPS_PAGES
        if path in WS_PATHS and self.listener != "ops":
            return None
        if path in WS_PATHS or (ops_route and self.listener == "public"):  # the other listener's
            self.refused("other_listener")
            return _text(HTTPStatus.NOT_FOUND, "not found")
        if path in DLQ_ACTIONS:
            if request.method != "POST":
                return _error(HTTPStatus.METHOD_NOT_ALLOWED, "method", "use POST")
            return await self._dlq(connection, request, DLQ_ACTIONS[path], query)
        if request.method != "GET":
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, "method", "use GET")
        if path == "/health" or path == "/livez":
            return _text(HTTPStatus.OK, "OK")
        if path == "/readyz":
            ready, why = await self.readiness()
            return _text(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, why)
        if path in OPS_READS and self.read_token:
            refused = self._check_token(request, (self.read_token, self.admin_token))
            if refused is not None:
                self.refused("bad_token")
                log.info("refused %s from %s: %s", path, _peer(connection), refused.status_code)
                return refused
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

    def _authorized(self, request: Request) -> Response | None:
        """None when the request carries the admin token; else the refusal to send."""
        if not self.admin_token:
            return _error(
                HTTPStatus.FORBIDDEN,
                "actions_disabled",
                "Admin actions are disabled: set server.admin_token to enable them.",
            )
        read_only = self.read_token and self.read_token != self.admin_token
        if read_only and _matches(request, self.read_token):
            return _error(
                HTTPStatus.FORBIDDEN,
                "read_only_token",
                "This is the read token (server.ops_read_token): actions need the admin token.",
            )
        return self._check_token(request, (self.admin_token,))

    @staticmethod
    def _check_token(request: Request, accepted: tuple[str, ...]) -> Response | None:
        """None when the request carries one of the ``accepted`` tokens (empty ones never
        match); else the 401 to send."""
        if not any(token and _matches(request, token) for token in accepted):
            return _error(
                HTTPStatus.UNAUTHORIZED,
                "bad_token",
                "The token is missing or wrong: send Authorization: Bearer <token>.",
            )
        return None

    async def _dlq(
        self, connection: ServerConnection, request: Request, action: DlqActionName, query: str
    ) -> Response:
        refused = self._authorized(request)
        if refused is not None:
            self.refused("bad_token" if refused.status_code == 401 else "forbidden")
            log.warning(
                "refused DLQ %s from %s: %s", action, _peer(connection), refused.status_code
            )
            return refused
        params = parse_qs(query)
        chosen = DlqAction(
            ids=params.get("id", []), all=params.get("all", [""])[0] in ("1", "true")
        )
        if chosen.all == bool(chosen.ids):
            return _error(
                HTTPStatus.BAD_REQUEST,
                "usage",
                "Name dead letters with id=... (repeatable) or all=1, not both.",
            )
        try:
            result = await self.dlq_action(action, chosen)
        except Exception as exc:
            log.exception("DLQ %s from %s failed", action, _peer(connection))
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, type(exc).__name__, str(exc))
        log.info(
            "DLQ %s through the API (from %s): %s; done %d, skipped %d, missing %d",
            action,
            _peer(connection),
            "all entries" if chosen.all else f"ids {chosen.ids}",
            len(result.done),
            len(result.skipped),
            len(result.missing),
            extra={"done": result.done, "skipped": result.skipped, "missing": result.missing},
        )
        return _response(HTTPStatus.OK, msgspec.json.encode(result), "application/json")


def _matches(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _peer(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "unknown peer"
    return f"{host}:{port}"


async def _json_or_503(producer: Callable[[], Awaitable[Any]]) -> Response:
    try:
        body = await producer()
    except Exception as exc:  # the route must answer even when Redis does not
        return _error(HTTPStatus.SERVICE_UNAVAILABLE, type(exc).__name__, str(exc))
    return _response(HTTPStatus.OK, msgspec.json.encode(body), "application/json")


def _error(status: HTTPStatus, code: str, message: str) -> Response:
    return _response(status, orjson.dumps({"error": code, "message": message}), "application/json")


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
