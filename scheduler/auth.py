"""Who may connect: node credentials, session tokens, browser origins, sessions per tenant
(docs/security.md, "Node authentication", "Session authentication and browser origins").

Every switch is off by default (``auth.*``): then every admission below succeeds with an open
grant and nothing is counted, as before these checks existed.

Decisions, each before anything is claimed or registered:

* :meth:`Authenticator.admit_node` / :meth:`Authenticator.admit_session`: at the WebSocket
  handshake, before any frame is read. The credential comes from ``?token=`` in the URL (what the
  real node and browser can send without a code change: their URL is configurable) or an
  ``Authorization: Bearer`` header; a session socket's ``Origin`` must be in the allow-list.
* :func:`node_registration`: a ``node_register`` against the node's token (its node id, its
  languages), before the gateway claims the id.
* :func:`requested_pairs_allowed`, :func:`allowed_targets`: the language pairs of a
  ``session_init`` and of a room fan-out against the session token's ``pairs``.
* :class:`TenantSessions`: the open sessions of each tenant, counted in Redis across replicas
  (leases the owning replica renews, so a dead replica's sessions stop counting).

A refusal is a :class:`Refusal`: a machine label (``reason``, the metric's label), the wire code
and a sentence for the peer, and whether the socket closes (1008) with a short close reason.
:meth:`Authenticator.refuse` carries it out: counted in ``lingua_auth_refusals_total{endpoint,
reason}``, logged with the reason and the peer's address, never with the credential (nor the
request's query string, which may hold it).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

import anyio
import jwt
import msgspec
from prometheus_client import CollectorRegistry, Counter
from websockets.http11 import Request

from cross_instance.clock import now_ms
from cross_instance.ids import check_id
from cross_instance.lua import ScriptLibrary
from cross_instance.redis_client import AnyRedis
from scheduler import protocol as wire
from scheduler.config import AuthConfig
from scheduler.links import CLOSE_POLICY, Link
from scheduler.scheduling.types import NodeCapabilities

__all__ = [
    "AUTH_ERROR_CODES",
    "NODE_AUDIENCE",
    "OPEN_NODE",
    "OPEN_SESSION",
    "REFUSAL_REASONS",
    "SESSION_AUDIENCE",
    "Authenticator",
    "Endpoint",
    "NodeGrant",
    "Refusal",
    "SessionGrant",
    "TenantSessions",
    "allowed_targets",
    "node_registration",
    "requested_pairs_allowed",
    "trim_languages",
]

log = logging.getLogger("lingua.auth")

# A token's `aud`: a session token is never a node credential, even when both are signed with
# one key.
NODE_AUDIENCE = "lingua-node"
SESSION_AUDIENCE = "lingua-session"
ALGORITHMS = ["HS256"]

Endpoint = Literal["node", "session"]
Reason = Literal[
    "missing", "invalid", "expired", "node_id", "languages", "origin", "tenant_limit", "pair"
]

# The metric's labels, every one present from the start at 0.
REFUSAL_REASONS: dict[Endpoint, tuple[Reason, ...]] = {
    "node": ("missing", "invalid", "expired", "node_id", "languages"),
    "session": ("missing", "invalid", "expired", "origin", "tenant_limit", "pair"),
}

# The codes of the error frames refusals send (lingua_client_errors_total has each from the start).
AuthErrorCode = Literal["UNAUTHORIZED", "LANGUAGE_NOT_ALLOWED", "TENANT_SESSION_LIMIT"]
AUTH_ERROR_CODES: tuple[str, ...] = get_args(AuthErrorCode)
# A tenant names a Redis key and a log field: an id, at most this long (docs/security.md).
TENANT_MAX_LENGTH = 64


class Refusal(Exception):
    """A peer may not proceed. ``reason``: the metric label; ``code`` and ``message``: the
    ``error`` frame (a sentence a person reads); ``close_reason``: the 1008 close frame's reason,
    or None when the socket stays open (the peer may ask again, e.g. other languages)."""

    def __init__(
        self, reason: Reason, code: AuthErrorCode, message: str, close_reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.message = message
        self.close_reason = close_reason


def _missing(endpoint: Endpoint) -> Refusal:
    what = "A node" if endpoint == "node" else "A session"
    return Refusal(
        "missing",
        "UNAUTHORIZED",
        f"{what} must present a credential: add ?token=<credential> to the URL or send an "
        "Authorization: Bearer header.",
        "authentication required",
    )


def _invalid(detail: str) -> Refusal:
    return Refusal(
        "invalid", "UNAUTHORIZED", f"The credential is not valid: {detail}.", "invalid credential"
    )


def _expired() -> Refusal:
    return Refusal(
        "expired",
        "UNAUTHORIZED",
        "The token has expired: connect again with a fresh one.",
        "credential expired",
    )


# -- grants ------------------------------------------------------------------------------------


class NodeGrant(msgspec.Struct, frozen=True):
    """What a node's credential allows. ``node_id``: the only id it may register as (None: any);
    ``languages``: the only languages it may serve (None: any)."""

    via: Literal["open", "secret", "token"]
    node_id: str | None = None
    languages: frozenset[str] | None = None


class SessionGrant(msgspec.Struct, frozen=True):
    """What a session's token allows. ``tenant``: whose session it is (None: no token, not
    counted); ``pairs``: the ``(src, tgt)`` pairs it may ask for, ``*`` for any (None: any);
    ``max_sessions``: the token's own limit of the tenant's sessions (None: the config's)."""

    tenant: str | None = None
    pairs: tuple[tuple[str, str], ...] | None = None
    max_sessions: int | None = None


OPEN_NODE = NodeGrant("open")
OPEN_SESSION = SessionGrant()


class _NodeClaims(msgspec.Struct):
    node_id: str | None = None
    langs: list[str] | None = None


class _SessionClaims(msgspec.Struct):
    tenant: str
    pairs: list[str] | None = None
    max_sessions: int | None = None


# -- node registration and session languages (pure) -------------------------------------------


def node_registration(
    grant: NodeGrant, announced: str | None, minted: str, caps: NodeCapabilities
) -> tuple[str, NodeCapabilities]:
    """The id a ``node_register`` registers as and the capabilities it may keep, or a
    :class:`Refusal`. A node that announces no id (the real node's first connection) gets its
    token's ``node_id`` when the token names one, else ``minted``; an announced id must be the
    token's. The token's ``langs`` trim the languages the node announces (a real node announces
    every language its models share, ~100); a token that leaves it no recognition or no
    translation language is a refusal."""
    node_id = announced or grant.node_id or minted
    if grant.node_id is not None and node_id != grant.node_id:
        raise Refusal(
            "node_id",
            "UNAUTHORIZED",
            "The token was issued for another node id than the one this node registers as.",
            "token names another node",
        )
    trimmed = trim_languages(grant, caps)
    # Refused only when the token took every language of a list away: a node that names none
    # itself registers as before, serving no pair until it names some (docs/protocol.md).
    if (caps.asr and not trimmed.asr) or (caps.semantic and not trimmed.semantic):
        raise Refusal(
            "languages",
            "UNAUTHORIZED",
            "None of the languages this node announces is allowed by its token.",
            "no language allowed",
        )
    return node_id, trimmed


def trim_languages(grant: NodeGrant, caps: NodeCapabilities) -> NodeCapabilities:
    """``caps`` with only the languages the grant allows (heartbeats announce languages too)."""
    allowed = grant.languages
    if allowed is None:
        return caps
    return msgspec.structs.replace(
        caps,
        asr=[lang for lang in caps.asr if lang in allowed],
        semantic=[lang for lang in caps.semantic if lang in allowed],
        tts=[lang for lang in caps.tts if lang in allowed],
    )


def _sources(init: wire.SessionInit) -> list[str]:
    # Two-way auto mode translates lang_a <-> lang_b whichever is spoken (scheduler.jobs).
    if init.src_lang == "auto" and init.lang_a and init.lang_b:
        return [init.lang_a, init.lang_b]
    return [init.src_lang]


def _allowed(pairs: Sequence[tuple[str, str]], src: str, tgt: str) -> bool:
    return any(s in ("*", src) and t in ("*", tgt) for s, t in pairs)


def requested_pairs_allowed(grant: SessionGrant, init: wire.SessionInit) -> None:
    """Raise a :class:`Refusal` when the token's pairs exclude a pair ``session_init`` asks
    for: ``src_lang:tgt_lang``, or in two-way auto mode both ``lang_a:lang_b`` and
    ``lang_b:lang_a`` (``auto`` as a source matches only a ``*`` source)."""
    if grant.pairs is None:
        return
    sources = _sources(init)
    if init.src_lang == "auto" and len(sources) == 2:
        wanted = [(sources[0], sources[1]), (sources[1], sources[0])]
    else:
        wanted = [(init.src_lang, init.tgt_lang)]
    refused = [f"{s}:{t}" for s, t in wanted if not _allowed(grant.pairs, s, t)]
    if refused:
        raise Refusal(
            "pair",
            "LANGUAGE_NOT_ALLOWED",
            f"This session's token does not allow translating {', '.join(refused)}.",
        )


def allowed_targets(
    grant: SessionGrant,
    init: wire.SessionInit,
    targets: dict[str, list[str]],
    speaker: str = "",
) -> tuple[dict[str, list[str]], list[str]]:
    """A room fan-out's targets split into those the token allows (from every other source
    language of the session: two-way auto never translates a language into itself) and the
    target languages it does not. A ``speaker`` grouped under a refused language keeps its own
    ``tgt_lang`` (allowed at ``session_init``)."""
    if grant.pairs is None:
        return targets, []
    pairs, sources = grant.pairs, _sources(init)
    kept = {
        t: list(r)
        for t, r in targets.items()
        if all(s == t or _allowed(pairs, s, t) for s in sources)
    }
    refused = [t for t in targets if t not in kept]
    if speaker and not any(speaker in r for r in kept.values()):
        kept.setdefault(init.tgt_lang, []).insert(0, speaker)
    return kept, refused


# -- handshake --------------------------------------------------------------------------------


def _credential(request: Request | None) -> str | None:
    if request is None:
        return None
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values and values[0] else None


def _remote(link: Link) -> str:
    return str(link.ws.remote_address)


class Authenticator:
    """The configured checks, the refusal metric, and the tenant counts."""

    def __init__(
        self,
        config: AuthConfig,
        redis: AnyRedis,
        *,
        key_prefix: str,
        registry: CollectorRegistry,
        errors_sent: Counter,
    ) -> None:
        self.config = config
        self.errors_sent = errors_sent
        self.tenants = TenantSessions(redis, key_prefix, config)
        self.refusals = Counter(
            "lingua_auth_refusals_total",
            "Sockets and requests refused by authentication, per endpoint and reason "
            "(docs/security.md)",
            ["endpoint", "reason"],
            registry=registry,
        )
        for endpoint, reasons in REFUSAL_REASONS.items():
            for reason in reasons:
                self.refusals.labels(endpoint, reason)

    @property
    def nodes_required(self) -> bool:
        return bool(self.config.node_secrets or self.config.node_token_keys)

    def admit_node(self, request: Request | None) -> NodeGrant:
        """The grant of a ``/ws/node`` handshake, or a :class:`Refusal`."""
        if not self.nodes_required:
            return OPEN_NODE
        credential = _credential(request)
        if credential is None:
            raise _missing("node")
        given = credential.encode()
        if any(hmac.compare_digest(given, s.encode()) for s in self.config.node_secrets):
            return NodeGrant("secret")
        if not self.config.node_token_keys:
            raise _invalid("it matches no configured node secret")
        payload = self._decode(credential, self.config.node_token_keys, NODE_AUDIENCE, ())
        try:
            claims = msgspec.convert(payload, _NodeClaims)
        except msgspec.ValidationError as exc:
            raise _invalid(f"bad claim ({exc})") from None
        langs = frozenset(claims.langs) if claims.langs is not None else None
        return NodeGrant("token", node_id=claims.node_id, languages=langs)

    def admit_session(self, request: Request | None) -> SessionGrant:
        """The grant of a ``/ws/session`` handshake (origin, then token), or a
        :class:`Refusal`."""
        if self.config.allowed_origins:
            origin = request.headers.get("Origin") if request is not None else None
            if origin not in self.config.allowed_origins:
                raise Refusal(
                    "origin",
                    "UNAUTHORIZED",
                    "This page's origin may not open sessions on this server.",
                    "origin not allowed",
                )
        if not self.config.session_token_keys:
            return OPEN_SESSION
        credential = _credential(request)
        if credential is None:
            raise _missing("session")
        payload = self._decode(
            credential, self.config.session_token_keys, SESSION_AUDIENCE, ("tenant",)
        )
        try:
            claims = msgspec.convert(payload, _SessionClaims)
        except msgspec.ValidationError as exc:
            raise _invalid(f"bad claim ({exc})") from None
        try:
            check_id("tenant claim", claims.tenant, TENANT_MAX_LENGTH)
        except ValueError:
            raise _invalid(
                "the tenant claim must be 1 to 64 characters of [A-Za-z0-9_.:@-]"
            ) from None
        pairs: tuple[tuple[str, str], ...] | None = None
        if claims.pairs is not None:
            split = [p.split(":") for p in claims.pairs]
            if any(len(p) != 2 or not all(p) for p in split):
                raise _invalid("each entry of the pairs claim must be src:tgt ('*' for any)")
            pairs = tuple((s, t) for s, t in split)
        if claims.max_sessions is not None and claims.max_sessions < 1:
            raise _invalid("the max_sessions claim must be at least 1")
        return SessionGrant(claims.tenant, pairs, claims.max_sessions)

    def _decode(
        self, token: str, keys: Sequence[str], audience: str, required: Sequence[str]
    ) -> dict[str, Any]:
        """The claims of a token any of ``keys`` signed (rotation: several keys verify)."""
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=ALGORITHMS,
                    audience=audience,
                    leeway=self.config.token_leeway_ms / 1000,
                    options={"require": ["exp", "aud", *required]},
                )
            except jwt.InvalidSignatureError:
                continue  # another key may have signed it
            except jwt.ExpiredSignatureError:
                raise _expired() from None
            except jwt.InvalidAudienceError:
                raise _invalid(
                    f"it is not meant for this endpoint (aud must be {audience})"
                ) from None
            except jwt.MissingRequiredClaimError as exc:
                raise _invalid(f"the token has no {exc.claim} claim") from None
            except jwt.InvalidTokenError:
                raise _invalid(
                    "it is neither a configured secret nor a well-formed token"
                ) from None
            return claims
        raise _invalid("no configured key verifies the token's signature")

    def session_limit(self, grant: SessionGrant) -> int:
        """Most open sessions of the grant's tenant (0: not counted)."""
        if grant.tenant is None:
            return 0
        limits = [n for n in (self.config.sessions_per_tenant, grant.max_sessions) if n]
        return min(limits) if limits else 0

    def refuse(
        self, link: Link, endpoint: Endpoint, refusal: Refusal, extra: dict[str, Any] | None = None
    ) -> None:
        """Answer a refusal: counted, logged (the reason, the peer, the ids: no credential), an
        ``error`` frame, and the 1008 close when the refusal closes."""
        self.refusals.labels(endpoint, refusal.reason).inc()
        log.warning(
            "%s refused: %s",
            endpoint,
            refusal.reason,
            extra={"remote": _remote(link), "reason": refusal.message, **(extra or {})},
        )
        self.errors_sent.labels(refusal.code).inc()
        link.send(wire.encode(wire.ErrorMessage(code=refusal.code, message=refusal.message)))
        if refusal.close_reason is not None:
            link.close(CLOSE_POLICY, refusal.close_reason)


# -- sessions per tenant -------------------------------------------------------------------------


@dataclass
class TenantSessions:
    """Open sessions per tenant across replicas: one ZSET per tenant of session id -> lease
    expiry. The replica that owns a session acquires its lease at ``session_init``, renews it
    every ``auth.tenant_renew_ms`` and removes it when the session ends; a replica that dies
    stops renewing, and its sessions stop counting within ``auth.tenant_lease_ms``."""

    redis: AnyRedis
    key_prefix: str
    config: AuthConfig

    def __post_init__(self) -> None:
        self.scripts = ScriptLibrary("auth")

    def key(self, tenant: str) -> str:
        return f"{self.key_prefix}:{{tenants}}:{tenant}"

    async def acquire(self, tenant: str, session_id: str, limit: int) -> int | None:
        """Count the session against its tenant: the tenant's count with it, or None when the
        tenant has ``limit`` sessions open already (nothing changed)."""
        code, count = await self.scripts.call(
            self.redis,
            "acquire_tenant_session",
            [self.key(tenant)],
            [session_id, limit, self.config.tenant_lease_ms, now_ms()],
        )
        return int(count) if int(code) == 0 else None

    async def release(self, tenant: str, session_id: str) -> None:
        await self.redis.zrem(self.key(tenant), session_id)

    async def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Push back the leases of ``(tenant, session id)``: only leases still held (a lease that
        ran out, the replica being stalled that long, is not taken again behind the limit)."""
        lease = self.config.tenant_lease_ms
        expiry = now_ms() + lease
        by_tenant: dict[str, dict[str, int]] = {}
        for tenant, session_id in held:
            by_tenant.setdefault(tenant, {})[session_id] = expiry
        if not by_tenant:
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant, leases in by_tenant.items():  # two commands per tenant, not per session
            pipe.zadd(self.key(tenant), leases, xx=True)
            pipe.pexpire(self.key(tenant), lease)
        await pipe.execute()

    async def renew_forever(self, held: Callable[[], list[tuple[str, str]]]) -> None:
        """The replica's renewal loop; a failed round is logged and retried at the next."""
        while True:
            await anyio.sleep(self.config.tenant_renew_ms / 1000)
            try:
                await self.renew(held())
            except Exception:
                log.exception("tenant session leases not renewed")
