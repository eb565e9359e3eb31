"""Session authentication (issue 14 item 2): a signed session token on ``/ws/session``
(``?token=`` or ``Authorization: Bearer``), an allow-list of browser origins, the token's language
pairs, and a limit of open sessions per tenant counted in Redis across replicas.

Real replicas in the test process (tests/gateways/conftest.py's ``serve``), the TLS-only,
ACL-only Redis of this folder, real WebSocket clients speaking the browser's frames.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from cross_instance.redis_client import AnyRedis
from scheduler.auth import TenantSessions
from scheduler.config import load_config
from scheduler.replica import Replica
from tests.e2e.clients import SimBrowser, SimNode
from tests.gateways.conftest import Served, serve, served
from tests.security.auth_peers import (
    KEY_NEW,
    KEY_OLD,
    HeaderBrowser,
    refusals,
    session_token,
)
from tests.waiting import until

__all__ = ["serve", "served"]

pytestmark = pytest.mark.anyio

Serve = Callable[..., Awaitable[Served]]
Connect = Callable[[Any], Awaitable[Any]]

TOKENS = {"session_token_keys": [KEY_OLD, KEY_NEW]}
APP = "https://app.example.com"


async def _refused_at_handshake(browser: SimBrowser, replica: Replica, code: str) -> str:
    """The browser sends its session_init anyway: one error frame, then 1008; no session was
    made or claimed."""
    owned_before = replica.runtime.ownership.owned_of("session")
    try:
        await browser.send({"type": "session_init", "client_version": "v", "platform": "web",
                            "src_lang": "zh", "tgt_lang": "en"})  # fmt: skip
    except ConnectionClosed:
        pass
    with anyio.fail_after(10):
        await browser.closed.wait()
    assert browser.closed_code == 1008
    [error] = browser.received
    assert error["type"] == "error" and error["code"] == code
    assert replica.runtime.ownership.owned_of("session") == owned_before
    assert browser.of_type("session_init_ack") == []
    return str(error["message"])


async def test_with_tokens_off_a_browser_needs_none(served: Served, peers: Connect) -> None:
    browser: SimBrowser = await peers(SimBrowser(served.session_url))
    await browser.init()


async def test_a_session_without_a_token_is_refused(serve: Serve, peers: Connect) -> None:
    served = await serve(auth=TOKENS)
    browser: SimBrowser = await peers(SimBrowser(served.session_url))
    await _refused_at_handshake(browser, served.replica, "UNAUTHORIZED")
    assert refusals(served.replica, "session", "missing") == 1


async def test_a_token_of_either_rotation_key_opens_a_session_in_the_url_or_the_header(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(auth=TOKENS)
    old: SimBrowser = await peers(
        SimBrowser(f"{served.session_url}?token={session_token(KEY_OLD)}")
    )
    await old.init()
    new: SimBrowser = await peers(
        HeaderBrowser(served.session_url, {"Authorization": f"Bearer {session_token(KEY_NEW)}"})
    )
    await new.init()
    assert served.replica.sessions.count() == 2


async def test_a_wrongly_signed_or_expired_token_is_refused(serve: Serve, peers: Connect) -> None:
    served = await serve(auth=TOKENS | {"token_leeway_ms": 1000})
    forged = session_token("forged-key-0123456789-0123456789-0123")
    browser: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={forged}"))
    await _refused_at_handshake(browser, served.replica, "UNAUTHORIZED")
    assert refusals(served.replica, "session", "invalid") == 1
    expired = session_token(expires_in_s=-5)
    late: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={expired}"))
    message = await _refused_at_handshake(late, served.replica, "UNAUTHORIZED")
    assert "expired" in message
    assert refusals(served.replica, "session", "expired") == 1
    # A tenant names a Redis key: a trailing newline is not a tenant (re.match with $ let it in)
    odd = session_token(tenant="acme\n")
    odd_tenant: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={odd}"))
    message = await _refused_at_handshake(odd_tenant, served.replica, "UNAUTHORIZED")
    assert "tenant claim" in message
    assert refusals(served.replica, "session", "invalid") == 2


async def test_origins_outside_the_allow_list_are_refused(serve: Serve, peers: Connect) -> None:
    served = await serve(auth={"allowed_origins": [APP]})
    ok: SimBrowser = await peers(HeaderBrowser(served.session_url, origin=APP))
    await ok.init()
    evil: SimBrowser = await peers(HeaderBrowser(served.session_url, origin="https://evil.example"))
    await _refused_at_handshake(evil, served.replica, "UNAUTHORIZED")
    none: SimBrowser = await peers(SimBrowser(served.session_url))  # no Origin header
    await _refused_at_handshake(none, served.replica, "UNAUTHORIZED")
    assert refusals(served.replica, "session", "origin") == 2


async def test_a_pair_the_token_excludes_gets_an_error_and_no_session_or_job(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(auth=TOKENS)
    node: SimNode = await peers(SimNode(served.node_url, (["zh"], ["en", "fr"])))
    await node.register()
    token = session_token(pairs=["zh:en"])
    browser: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={token}", "zh", "fr"))
    await browser.send({"type": "session_init", "client_version": "v", "platform": "web",
                        "src_lang": "zh", "tgt_lang": "fr"})  # fmt: skip
    error = await browser.wait_type("error")
    assert error["code"] == "LANGUAGE_NOT_ALLOWED" and "zh:fr" in error["message"]
    assert served.replica.sessions.count() == 0
    # The socket stays open: the same page may ask for a pair it is allowed.
    await browser.send({"type": "audio_chunk", "session_id": "s-X", "seq": 1, "is_final": True,
                        "payload": ""})  # fmt: skip
    refused = await browser.wait_for(lambda m: m.get("code") == "INVALID_SESSION")
    assert refused["type"] == "error"
    browser.tgt = "en"
    await browser.init()
    await browser.speak()
    job = await node.wait_type("job_assign")
    assert job["tgt_lang"] == "en"
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result")
    assert [j.tgt_lang for j in await served.replica.core.list_jobs()] == ["en"]
    assert refusals(served.replica, "session", "pair") == 1


async def test_a_tenant_at_its_limit_is_refused_on_another_replica_until_a_session_ends(
    serve: Serve, peers: Connect, redis: AnyRedis
) -> None:
    auth = TOKENS | {"sessions_per_tenant": 2}
    a = await serve(auth=auth)
    b = await serve(auth=auth)
    token = session_token(tenant="acme")
    first: SimBrowser = await peers(SimBrowser(f"{a.session_url}?token={token}"))
    await first.init()
    second: SimBrowser = await peers(SimBrowser(f"{b.session_url}?token={token}"))
    await second.init()
    # Another tenant has its own count.
    other: SimBrowser = await peers(
        SimBrowser(f"{b.session_url}?token={session_token(tenant='globex')}")
    )
    await other.init()
    third: SimBrowser = await peers(SimBrowser(f"{b.session_url}?token={token}"))
    await third.send({"type": "session_init", "client_version": "v", "platform": "web",
                      "src_lang": "zh", "tgt_lang": "en"})  # fmt: skip
    error = await third.wait_type("error")
    assert error["code"] == "TENANT_SESSION_LIMIT" and "2" in error["message"]
    with anyio.fail_after(10):
        await third.closed.wait()
    assert third.closed_code == 1008
    assert refusals(b.replica, "session", "tenant_limit") == 1
    assert b.replica.sessions.count() == 2
    key = a.replica.auth.tenants.key("acme")
    assert sorted(await redis.zrange(key, 0, -1)) == sorted([first.session_id, second.session_id])
    # The first session ends on replica a: its place is free for a session on replica b.
    await first.close()
    await until(lambda: a.replica.sessions.count() == 0)
    assert await redis.zrange(key, 0, -1) == [second.session_id]
    fourth: SimBrowser = await peers(SimBrowser(f"{b.session_url}?token={token}"))
    await fourth.init()


async def test_a_failed_release_of_the_session_id_still_gives_the_tenants_place_back(
    serve: Serve, peers: Connect, redis: AnyRedis
) -> None:
    served = await serve(auth=TOKENS | {"sessions_per_tenant": 1})
    gateway = served.replica.sessions

    async def release_fails(session_id: str) -> bool:
        raise ConnectionError("Redis went away during the release")

    gateway.claims = _ReleaseFails(gateway.claims, release_fails)  # type: ignore[assignment]
    token = session_token(tenant="acme")
    first: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={token}"))
    await first.init()
    await first.close()
    await until(lambda: gateway.count() == 0)
    # Not refused for auth.tenant_lease_ms: the lease went with the session.
    assert await redis.zrange(served.replica.auth.tenants.key("acme"), 0, -1) == []
    second: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={token}"))
    await second.init()


class _ReleaseFails:
    """The runtime's session claims with a release that raises."""

    def __init__(self, claims: Any, release: Any) -> None:
        self._claims = claims
        self.release_session = release

    async def claim_session(self, session_id: str) -> str | None:
        result: str | None = await self._claims.claim_session(session_id)
        return result


async def test_a_tokens_max_sessions_lowers_the_limit(serve: Serve, peers: Connect) -> None:
    served = await serve(auth=TOKENS | {"sessions_per_tenant": 5})
    token = session_token(tenant="small", max_sessions=1)
    first: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={token}"))
    await first.init()
    second: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={token}"))
    await second.send({"type": "session_init", "client_version": "v", "platform": "web",
                       "src_lang": "zh", "tgt_lang": "en"})  # fmt: skip
    assert (await second.wait_type("error"))["code"] == "TENANT_SESSION_LIMIT"


async def test_sessions_of_a_dead_replica_stop_counting_and_live_ones_are_renewed(
    serve: Serve, peers: Connect, redis: AnyRedis, key_prefix: str
) -> None:
    auth = TOKENS | {"sessions_per_tenant": 2, "tenant_lease_ms": 1500, "tenant_renew_ms": 100}
    served = await serve(auth=auth)
    token = session_token(tenant="acme")
    live: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={token}"))
    await live.init()
    # A replica that died holding a session: its lease was taken and is never renewed.
    config = load_config(environ={}, overrides={"auth": auth})
    dead = TenantSessions(redis, key_prefix, config.auth)
    assert await dead.acquire("acme", "s-OF-A-DEAD-REPLICA", 2) == 2
    key = dead.key("acme")
    dead_until = await redis.zscore(key, "s-OF-A-DEAD-REPLICA")
    assert dead_until is not None
    refused: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={token}"))
    await refused.send({"type": "session_init", "client_version": "v", "platform": "web",
                        "src_lang": "zh", "tgt_lang": "en"})  # fmt: skip
    assert (await refused.wait_type("error"))["code"] == "TENANT_SESSION_LIMIT"

    async def live_renewed_past_the_dead_lease() -> bool:
        score = await redis.zscore(key, live.session_id)
        return score is not None and score > dead_until

    await until(live_renewed_past_the_dead_lease)

    async def admitted() -> bool:
        browser: SimBrowser = await peers(SimBrowser(f"{served.session_url}?token={token}"))
        await browser.send({"type": "session_init", "client_version": "v", "platform": "web",
                            "src_lang": "zh", "tgt_lang": "en"})  # fmt: skip
        reply = await browser.wait_for(lambda m: m["type"] in ("error", "session_init_ack"))
        return bool(reply["type"] == "session_init_ack")

    await until(admitted)
    members = await redis.zrange(key, 0, -1)
    assert "s-OF-A-DEAD-REPLICA" not in members and live.session_id in members
    assert len(members) == 2


def test_auth_lists_from_the_environment_and_hidden_by_config_show() -> None:
    secret = "node-secret-from-env-0123456789"
    env = {
        "LINGUA_AUTH__NODE_SECRETS": f'["{secret}"]',
        "LINGUA_AUTH__SESSION_TOKEN_KEYS": f'["{KEY_OLD}", "{KEY_NEW}"]',
        "LINGUA_AUTH__ALLOWED_ORIGINS": f'["{APP}"]',
    }
    config = load_config(environ=env)
    assert config.auth.node_secrets == [secret]
    assert config.auth.session_token_keys == [KEY_OLD, KEY_NEW]
    assert config.auth.allowed_origins == [APP]
    shown = subprocess.run(
        [sys.executable, "-m", "scheduler", "config", "show"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert secret not in shown and KEY_OLD not in shown and KEY_NEW not in shown
    assert "hidden" in shown and APP in shown


async def test_a_room_fan_out_makes_no_job_for_a_language_the_speakers_token_excludes(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(auth=TOKENS)
    node: SimNode = await peers(SimNode(served.node_url, (["zh"], ["en", "fr"])))
    await node.register()
    host: SimBrowser = await peers(
        SimBrowser(f"{served.session_url}?token={session_token(pairs=['zh:en'])}", "zh", "en")
    )
    await host.init()
    await host.send({"type": "room_create", "client_ts": 1})
    code = (await host.wait_type("room_create_ack"))["room_code"]
    for lang in ("en", "fr"):
        member: SimBrowser = await peers(
            SimBrowser(f"{served.session_url}?token={session_token()}", lang, "zh")
        )
        await member.init()
        await member.send({"type": "room_join", "room_code": code, "preferred_lang": lang})
    await host.wait_for(lambda m: m.get("type") == "room_members" and len(m["members"]) == 3)
    await host.speak()
    job = await node.wait_type("job_assign")
    assert job["tgt_lang"] == "en"
    error = await host.wait_type("error")
    assert error["code"] == "LANGUAGE_NOT_ALLOWED" and "fr" in error["message"]
    await node.send(node.result_for(job))
    await host.wait_type("translation_result", job_id=job["job_id"])
    assert [j.tgt_lang for j in await served.replica.core.list_jobs()] == ["en"]
    assert len(node.of_type("job_assign")) == 1
    assert refusals(served.replica, "session", "pair") == 1
