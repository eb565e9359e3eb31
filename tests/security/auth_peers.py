"""Helpers of the authentication tests: tokens signed as an issuer would, peers that send
headers (``Authorization``, ``Origin``), and a look at what a replica counted and claimed."""

from __future__ import annotations

import time
from typing import Any

import jwt
from prometheus_client import generate_latest
from websockets.asyncio.client import connect

from scheduler.auth import NODE_AUDIENCE, SESSION_AUDIENCE
from scheduler.replica import Replica
from tests.e2e.clients import SimBrowser, SimNode

__all__ = ["HeaderBrowser", "HeaderNode", "node_token", "refusals", "session_token"]

KEY_OLD = "old-key-0123456789-0123456789-0123456789"
KEY_NEW = "new-key-0123456789-0123456789-0123456789"


def node_token(key: str = KEY_NEW, *, expires_in_s: float = 600, **claims: Any) -> str:
    payload = {"aud": NODE_AUDIENCE, "exp": int(time.time() + expires_in_s), **claims}
    return jwt.encode(payload, key, algorithm="HS256")


def session_token(
    key: str = KEY_NEW, *, tenant: str = "acme", expires_in_s: float = 600, **claims: Any
) -> str:
    payload = {
        "aud": SESSION_AUDIENCE,
        "exp": int(time.time() + expires_in_s),
        "tenant": tenant,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="HS256")


def refusals(replica: Replica, endpoint: str, reason: str) -> float:
    value = replica.registry.get_sample_value(
        "lingua_auth_refusals_total", {"endpoint": endpoint, "reason": reason}
    )
    assert value is not None, f"lingua_auth_refusals_total{{{endpoint},{reason}}} not exported"
    return value


def exposition(replica: Replica) -> str:
    return generate_latest(replica.registry).decode()


async def _connect(peer: SimNode | SimBrowser, headers: dict[str, str], origin: str | None) -> None:
    peer.ws = await connect(
        peer.url,
        compression=None,
        max_size=None,
        open_timeout=5,
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
    )


class HeaderNode(SimNode):
    def __init__(self, url: str, headers: dict[str, str], **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.headers = headers

    async def connect(self) -> None:
        await _connect(self, self.headers, None)


class HeaderBrowser(SimBrowser):
    def __init__(
        self, url: str, headers: dict[str, str] | None = None, origin: str | None = None, **kw: Any
    ) -> None:
        super().__init__(url, **kw)
        self.headers = headers or {}
        self.origin = origin

    async def connect(self) -> None:
        await _connect(self, self.headers, self.origin)
