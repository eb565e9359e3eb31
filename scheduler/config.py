"""The daemon's configuration: one typed tree, loaded from TOML, overridden by environment.

Precedence (last wins): defaults < TOML file (``--config`` or ``LINGUA_CONFIG``) < environment
< command-line flags. An environment variable names a key as ``LINGUA_<SECTION>__<KEY>``
(``LINGUA_SCHEDULING__JOB_TIMEOUT_MS=20000``); lists are JSON (``'["a:1","b:2"]'``). Two short
aliases exist because operators and Kubernetes set them constantly: ``LINGUA_REDIS_URL`` and
``LINGUA_INSTANCE_ID``.

Validation happens once, at start: a bad value raises :class:`ConfigError` naming the key
(``scheduling.job_timeout_ms: Expected `int` >= 1000, got `5```).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from cross_instance.config import RedisConfig, RuntimeConfig, _doc, validate_runtime

__all__ = [
    "AuditConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "LimitsConfig",
    "LoggingConfig",
    "SchedulingConfig",
    "ServerConfig",
    "SessionConfig",
    "TracingConfig",
    "iter_keys",
    "load_config",
]

ENV_PREFIX = "LINGUA_"
# Shortest auth.node_secrets entry, and HMAC key (HS256: a key shorter than its 256-bit output
# weakens it; RFC 7518 §3.2).
MIN_SECRET_CHARS = 16
MIN_TOKEN_KEY_CHARS = 32
ENV_ALIASES = {
    "LINGUA_REDIS_URL": ("redis", "url"),
    "LINGUA_INSTANCE_ID": ("runtime", "instance_id"),
}


class ServerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: Annotated[str, _doc("Address serve listens on.")] = "0.0.0.0"
    port: Annotated[
        int, _doc("Port of /ws/node, /ws/session and the HTTP routes.", ge=0, le=65535)
    ] = 5010
    max_frame_bytes: Annotated[
        int,
        _doc("Largest WebSocket message accepted; larger ones close the socket (1009).", ge=1024),
    ] = 2 * 1024 * 1024
    ping_interval_ms: Annotated[
        int, _doc("WebSocket ping interval (keepalive); 0 disables.", ge=0)
    ] = 20000
    ping_timeout_ms: Annotated[int, _doc("A pong missing this long closes the socket.", ge=1)] = (
        20000
    )
    compression: Annotated[bool, _doc("permessage-deflate on WebSockets.")] = False
    send_queue_max: Annotated[
        int,
        _doc(
            "Messages queued to one socket before it is treated as a slow consumer and closed.",
            ge=1,
        ),
    ] = 1024
    close_timeout_ms: Annotated[int, _doc("How long a closing handshake may take.", ge=1)] = 5000
    max_connections: Annotated[
        int, _doc("Most WebSocket connections one replica accepts.", ge=1)
    ] = 10000
    drain_unready_ms: Annotated[
        int,
        _doc(
            "On drain, /readyz answers 503 this long before the listener closes, so load "
            "balancers stop routing new connections here first (counts against "
            "runtime.drain_grace_ms).",
            ge=0,
        ),
    ] = 2000
    drain_results_ms: Annotated[
        int,
        _doc(
            "On drain, after the listener closes, the longest the replica waits for the "
            "results of its sessions' unanswered utterances (delivered before their sockets "
            "close 1012; what is still unanswered then gets an error frame) and for its nodes "
            "to finish the jobs they run (taken out of the pools at the drain's start, each "
            "node closes 1012 once it runs none). Bounded by what runtime.drain_grace_ms "
            "leaves after server.drain_unready_ms and runtime.route_grace_ms (the hand-over).",
            ge=0,
        ),
    ] = 8000
    shutdown_close_code: Annotated[
        int,
        _doc(
            "Close code sent to clients and nodes on graceful shutdown (1012: service restart).",
            ge=1000,
            le=4999,
        ),
    ] = 1012
    admin_token: Annotated[
        str,
        _doc(
            "Bearer token the dashboard's actions (DLQ replay and purge, POST /api/v1/dlq/*) "
            "require; empty disables them (403). Never logged or shown by `config show`."
        ),
    ] = ""
    ops_read_token: Annotated[
        str,
        _doc(
            "Bearer token the operator reads (/metrics, /api/v1/cluster, /api/v1/stats) require "
            "(the admin token is accepted too); empty: reads are open (401 without it when set). "
            "Never logged or shown by `config show`."
        ),
    ] = ""
    ops_port: Annotated[
        int,
        _doc(
            "Port of a separate operator listener (/metrics, /api/v1/*, /dashboard; /readyz "
            "too); the public port then answers 404 for those. 0: they stay on server.port.",
            ge=0,
            le=65535,
        ),
    ] = 0
    ops_host: Annotated[
        str, _doc("Address of the operator listener (with server.ops_port only).")
    ] = "127.0.0.1"
    ops_audit_max_entries: Annotated[
        int,
        _doc(
            "Most records kept in the operator audit stream (`ops-log`: DLQ replay and purge, "
            "drain, by whom); older ones are trimmed.",
            ge=1,
        ),
    ] = 10000
    dashboard_refresh_ms: Annotated[
        int, _doc("How often the dashboard page reloads the cluster view.", ge=500)
    ] = 5000
    dashboard_rows: Annotated[
        int,
        _doc(
            "Most rows of each dashboard table (nodes, jobs in flight, dead letters); the "
            "totals are counted whatever the rows shown.",
            ge=1,
        ),
    ] = 200
    dashboard_pair_examples: Annotated[
        int,
        _doc("Language pairs shown per node as examples (the count is always complete).", ge=0),
    ] = 3


class SchedulingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    domain: Annotated[
        str,
        _doc(
            "Scheduling domain: the hash tag every scheduling key shares (one Redis slot). "
            "More domains scale past one Redis core.",
            pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        ),
    ] = "d0"
    node_ttl_ms: Annotated[
        int,
        _doc(
            "A node is live this long after its last heartbeat (3 x the node's 15 s beat).", ge=1000
        ),
    ] = 45000
    default_max_concurrent_jobs: Annotated[
        int,
        _doc(
            "Slots of a node that does not report max_concurrent_jobs (the real node never "
            "does, and queues work itself): large enough that normal speech, bursts of tiny "
            "cuts included, never meets a cap; a node that reports a number keeps it.",
            ge=1,
        ),
    ] = 32
    max_concurrent_jobs_limit: Annotated[
        int, _doc("Upper bound on the slots a node may claim.", ge=1)
    ] = 64
    max_languages_per_node: Annotated[
        int,
        _doc(
            "Most languages per list (asr / semantic / tts) a node may advertise; a registration "
            "beyond it is refused. A real node advertises ~100 (Whisper x M2M100).",
            ge=1,
        ),
    ] = 128
    select_sample_size: Annotated[
        int,
        _doc(
            "Pool members one dispatch compares (a window at a random position, least-loaded "
            "wins); a pool this small or smaller is compared whole.",
            ge=1,
        ),
    ] = 8
    select_scan_limit: Annotated[
        int,
        _doc(
            "Most live pool members one dispatch examines when its sample has no usable node "
            "(cost per decision is bounded by it).",
            ge=1,
        ),
    ] = 16
    slot_wait_ms: Annotated[
        int,
        _doc(
            "How long a job waits for a slot when every node of its pair is busy, before it "
            "fails with NO_AVAILABLE_NODE (checked every sweep_interval_ms).",
            ge=0,
        ),
    ] = 10000
    slot_wait_max: Annotated[
        int,
        _doc(
            "Most jobs waiting for a slot per language pair; one more fails at once with "
            "NO_AVAILABLE_NODE (0: no job waits).",
            ge=0,
        ),
    ] = 256
    slot_wait_lookahead: Annotated[
        int,
        _doc(
            "Oldest waiting jobs a freed slot (and each sweep) is offered to: bounds the cost "
            "of a completion while jobs wait; waiters beyond it are served by the sweep.",
            ge=1,
        ),
    ] = 16
    job_timeout_ms: Annotated[
        int,
        _doc("A dispatched job with no result this long is cancelled and failed over.", ge=1000),
    ] = 30000
    max_attempts: Annotated[
        int, _doc("Attempts per job (first dispatch included) before JOB_TIMEOUT.", ge=1)
    ] = 3
    job_retention_ms: Annotated[
        int, _doc("How long a finished job record (and its idempotency entry) is kept.", ge=1000)
    ] = 600000
    session_affinity_ttl_ms: Annotated[
        int,
        _doc("How long a session's preferred node is remembered after its last dispatch.", ge=1000),
    ] = 3600000
    node_orphan_grace_ms: Annotated[
        int,
        _doc(
            "A node whose replica died (its ids released when a live replica takes the dead "
            "one's inbox over) and that has not registered again by then gets this long to come "
            "back; then the sweep takes it offline and its jobs move, instead of at "
            "node_ttl_ms or their deadline. The real node reconnects about 5 s after its "
            "socket drops, usually before the takeover.",
            ge=0,
        ),
    ] = 3000
    sweep_interval_ms: Annotated[
        int, _doc("How often a replica claims due job deadlines and sweeps dead nodes.", ge=10)
    ] = 500
    sweep_batch: Annotated[
        int, _doc("Most deadlines or dead nodes one sweep call handles.", ge=1)
    ] = 100
    stall_ms: Annotated[
        int,
        _doc(
            "No sweep for this long means Redis was away (restarted, stalled) or no replica "
            "ran: deadlines and node liveness that lapsed meanwhile are moved to now + "
            "stall_grace_ms instead of failing work whose answer waited for Redis. More than "
            "twice sweep_interval_ms.",
            ge=1,
        ),
    ] = 2000
    stall_grace_ms: Annotated[
        int,
        _doc(
            "After a stall (stall_ms), how long the results queued on the replicas have to "
            "complete before the deadlines that lapsed during it are enforced.",
            ge=0,
        ),
    ] = 3000
    sweep_pool_members: Annotated[
        int,
        _doc(
            "Pool members one sweep call removes with dead nodes before it leaves the rest to "
            "the next call (a node with ~100 languages has ~10,000); bounds how long one sweep "
            "blocks Redis.",
            ge=1,
        ),
    ] = 50000
    sent_retention_ms: Annotated[
        int,
        _doc(
            "How long a (node, session, utterance_index) sent mark is kept: a node refuses a "
            "second job for the same utterance, so failover avoids it. Must outlast every "
            "attempt of a job (job_timeout_ms x max_attempts).",
            ge=1000,
        ),
    ] = 21600000
    max_id_length: Annotated[
        int, _doc("Longest node, session, job or turn id the scheduling core accepts.", ge=8)
    ] = 128
    list_limit: Annotated[
        int, _doc("Most entries the read commands (nodes, pools, jobs) return.", ge=1)
    ] = 1000


class SessionConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pause_ms: Annotated[
        int, _doc("Silence (no non-empty chunk) that finalizes an utterance; 0 disables.", ge=0)
    ] = 3000
    max_duration_ms: Annotated[
        int,
        _doc(
            "Audio duration (estimated) that finalizes an utterance and continues the turn.", ge=1
        ),
    ] = 10000
    max_utterance_bytes: Annotated[
        int, _doc("Size guard: an utterance buffer beyond this is finalized at once.", ge=1024)
    ] = 500 * 1024
    hangover_auto_ms: Annotated[int, _doc("Delay before an automatic finalize.", ge=0)] = 150
    hangover_manual_ms: Annotated[int, _doc("Delay before a manual (is_final) finalize.", ge=0)] = (
        200
    )
    padding_auto_ms: Annotated[
        int, _doc("padding_ms sent to the node for automatic finalizes.", ge=0)
    ] = 220
    padding_manual_ms: Annotated[
        int, _doc("padding_ms sent to the node for manual finalizes.", ge=0)
    ] = 280
    opus_frame_ms: Annotated[
        int,
        _doc("Duration of one Plan-A Opus packet, for the max-duration estimate.", ge=1, le=120),
    ] = 20
    opus_bytes_per_second: Annotated[
        int,
        _doc(
            "Opus byte rate assumed for the max-duration estimate when a chunk is not Plan-A "
            "framed (3000: 24 kbps, the browser's bitrate).",
            ge=100,
        ),
    ] = 3000
    tts_hold_max_ms: Annotated[
        int,
        _doc(
            "Longest a tts_started holds the silence timer when no tts_play_ended follows "
            "(a lost end event must not keep an utterance open).",
            ge=0,
        ),
    ] = 30000
    max_held_utterances: Annotated[
        int,
        _doc(
            "Explicit utterance messages held back while a lower utterance_index is missing; "
            "one further ahead is refused.",
            ge=0,
        ),
    ] = 8
    result_dedup_max: Annotated[
        int, _doc("Result ids remembered per session for deduplication.", ge=1)
    ] = 1024
    dispatch_queue_max: Annotated[
        int,
        _doc(
            "Finalized utterances one session may have waiting for dispatch (e.g. while Redis"
            " stalls); one more is refused with an error frame.",
            ge=1,
        ),
    ] = 32
    max_room_members: Annotated[int, _doc("Most members in one room.", ge=2)] = 16
    room_idle_ms: Annotated[int, _doc("A room with no activity this long expires.", ge=1000)] = (
        1800000
    )
    room_touch_interval_ms: Annotated[
        int,
        _doc(
            "Activity in a room (a member's audio, a relayed WebRTC message, a result fanned "
            "out) pushes its expiry back at most this often per member session; keep it a "
            "small fraction of room_idle_ms.",
            ge=100,
        ),
    ] = 60000
    room_expiry_batch: Annotated[
        int,
        _doc("Most idle rooms one sweep expires (their members are sent room_expired).", ge=1),
    ] = 100
    error_repeat_window_ms: Annotated[
        int,
        _doc(
            "An error frame with the same code as one sent to the session less than this long "
            "ago is not sent (the browser alert()s each one); counted in "
            "lingua_client_errors_suppressed_total. 0 sends every one.",
            ge=0,
        ),
    ] = 15000
    room_code_attempts: Annotated[
        int, _doc("Random six-digit codes tried before room_create fails (collisions).", ge=1)
    ] = 8
    partial_update_interval_ms: Annotated[
        int, _doc("partial_update_interval_ms sent to nodes.", ge=1)
    ] = 1000
    result_group_window_ms: Annotated[
        int,
        _doc(
            "A result joins the session's current TTS group (same group_id, next part_index) "
            "if it arrives within this long of the group's start or its last tts_play_ended.",
            ge=0,
        ),
    ] = 2000


class AuditConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    interval_ms: Annotated[
        int,
        _doc(
            "How often every replica audits the shared Redis state (lingua_audit_violations); "
            "each run reads in pages, so its cost is spread and bounded per call.",
            ge=100,
        ),
    ] = 60000
    page_size: Annotated[
        int,
        _doc(
            "Nodes, jobs or owner entries one audit read covers (HSCAN / ZRANGEBYLEX COUNT, one "
            "script call per page): bounds how long one audit call blocks Redis.",
            ge=1,
        ),
    ] = 500
    grace_ms: Annotated[
        int,
        _doc(
            "How long past a job's deadline, a node's liveness or a replica's presence the "
            "audit waits before calling it a violation: the sweeper and the takeover handle "
            "these normally within their intervals.",
            ge=0,
        ),
    ] = 15000
    inbox_stuck_ms: Annotated[
        int,
        _doc(
            "An inbox entry older than this (delivered and not acknowledged, or not read yet) "
            "is stuck: healthy entries are acknowledged, or dead-lettered after "
            "runtime.max_deliveries, well before.",
            ge=1000,
        ),
    ] = 120000
    examples: Annotated[
        int, _doc("Most example violations the audit lists per check (the count is exact).", ge=1)
    ] = 5


class AuthConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Who may connect (docs/security.md). Every switch is off by default: with no key set, any
    node may register and any browser may open sessions, as before."""

    node_secrets: Annotated[
        list[str],
        _doc(
            "Shared secrets a node may present on /ws/node (`?token=` or `Authorization: Bearer`); "
            "any one is accepted, so a rotation adds the new one, moves the nodes, then drops the "
            "old (each at least 16 characters). With this or node_token_keys set, a node "
            "without a valid credential is refused (1008). Never logged or shown by `config show`."
        ),
    ] = msgspec.field(default_factory=list)
    node_token_keys: Annotated[
        list[str],
        _doc(
            "HMAC keys that verify node tokens (JWT HS256, `aud` = lingua-node, `exp` required, "
            "optional `node_id` and `langs` claims); any one verifies (rotation). Each at least "
            "32 characters. Never logged or shown by `config show`."
        ),
    ] = msgspec.field(default_factory=list)
    session_token_keys: Annotated[
        list[str],
        _doc(
            "HMAC keys that verify session tokens (JWT HS256, `aud` = lingua-session, `exp` and "
            "`tenant` required, optional `pairs` and `max_sessions`); any one verifies "
            "(rotation); each at least 32 characters. Set: /ws/session requires a token (`?token=` or `Authorization: "
            "Bearer`). Never logged or shown by `config show`."
        ),
    ] = msgspec.field(default_factory=list)
    token_leeway_ms: Annotated[
        int,
        _doc(
            "Clock skew allowed when checking a token's `exp` (and `nbf`, `iat`) against this "
            "replica's clock.",
            ge=0,
        ),
    ] = 5000
    allowed_origins: Annotated[
        list[str],
        _doc(
            "Browser origins (`https://app.example.com`) /ws/session accepts; a socket with "
            "another or no `Origin` header is refused (1008). Empty: any origin, none included."
        ),
    ] = msgspec.field(default_factory=list)
    sessions_per_tenant: Annotated[
        int,
        _doc(
            "Most open sessions per tenant (the session token's `tenant`) across every replica; "
            "a token's `max_sessions` can only lower it. 0: no limit but the token's. Sessions "
            "without a token have no tenant and are not counted.",
            ge=0,
        ),
    ] = 0
    tenant_lease_ms: Annotated[
        int,
        _doc(
            "A session counts against its tenant this long after its replica last renewed it: "
            "the sessions of a replica that died stop counting at most this long after.",
            ge=1000,
        ),
    ] = 30000
    tenant_renew_ms: Annotated[
        int,
        _doc(
            "How often a replica renews the tenant leases of its sessions (shorter than "
            "tenant_lease_ms).",
            ge=100,
        ),
    ] = 10000


class LoggingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], _doc("Log level.")] = "INFO"
    json: Annotated[bool, _doc("One JSON object per line (ids as fields); false: plain text.")] = (
        True
    )


class TracingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: Annotated[
        bool,
        _doc(
            "OpenTelemetry spans of dispatch, the inbox hop, the node round trip and the relay "
            "(docs/operations.md, Tracing). Needs the extra: pip install "
            "'lingua-scheduler[tracing]'. Off: nothing of OpenTelemetry is imported."
        ),
    ] = False
    service_name: Annotated[
        str, _doc("service.name of every span (service.instance.id is runtime.instance_id).")
    ] = "lingua-scheduler"
    otlp_endpoint: Annotated[
        str,
        _doc(
            "OTLP/HTTP traces endpoint spans are exported to (a collector's /v1/traces); "
            "headers come from OTEL_EXPORTER_OTLP_HEADERS."
        ),
    ] = "http://localhost:4318/v1/traces"
    sample_ratio: Annotated[
        float,
        _doc(
            "Share of traces recorded, chosen from the trace id (so every replica keeps or "
            "drops the same utterance); a hop follows its sender's choice.",
            ge=0,
            le=1,
        ),
    ] = 1.0
    export_interval_ms: Annotated[
        int, _doc("Finished spans are exported in a batch at least this often.", ge=1)
    ] = 5000
    export_timeout_ms: Annotated[
        int, _doc("Longest one export (and the flush at exit) may take.", ge=1)
    ] = 10000
    queue_max: Annotated[
        int,
        _doc(
            "Finished spans waiting for export; past it new ones are dropped (the exporter "
            "is down or slow), never the replica's work.",
            ge=1,
        ),
    ] = 2048
    export_batch: Annotated[
        int, _doc("Most spans in one export request (at most queue_max).", ge=1)
    ] = 512
    open_spans_max: Annotated[
        int,
        _doc(
            "Node round-trip spans open at once on a replica (job_assign sent, no result, "
            "cancel or disconnect yet); past it the oldest is ended as evicted.",
            ge=1,
        ),
    ] = 10000


class LimitsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What one address, connection or session may use (docs/security.md, "Limits"); each
    breach is answered and counted in lingua_limit_breaches_total{limit}. Also limits:
    server.max_connections, server.max_frame_bytes, session.max_utterance_bytes,
    session.max_room_members."""

    connections_per_address: Annotated[
        int,
        _doc(
            "Most WebSocket connections from one client address to one replica; one more is "
            "closed with 1008. 0: no limit (the default: behind a load balancer every "
            "connection comes from the balancer unless trusted_proxies is set).",
            ge=0,
        ),
    ] = 0
    trusted_proxies: Annotated[
        int,
        _doc(
            "Proxies (load balancers) in front of the replicas that append the client address "
            "to X-Forwarded-For: a connection's address is the entry the outermost of them "
            "appended. 0: the peer address, X-Forwarded-For ignored (anyone can write it).",
            ge=0,
        ),
    ] = 0
    session_messages_per_second: Annotated[
        int,
        _doc(
            "Messages a /ws/session connection may send per second on average; beyond it (and "
            "the burst) a message is dropped and answered with error RATE_LIMITED. The real "
            "browser sends at most ~10 per second.",
            ge=1,
        ),
    ] = 20
    session_message_burst: Annotated[
        int, _doc("Messages a /ws/session connection may send at once above the rate.", ge=1)
    ] = 200
    node_messages_per_second: Annotated[
        int,
        _doc(
            "Messages a /ws/node connection may send per second on average; beyond it (and the "
            "burst) the node is closed with 1008 (nodes get no error frames): a result and a "
            "partial per job and slot fit many times over.",
            ge=1,
        ),
    ] = 200
    node_message_burst: Annotated[
        int, _doc("Messages a /ws/node connection may send at once above the rate.", ge=1)
    ] = 1000
    rooms_per_session: Annotated[
        int,
        _doc(
            "Rooms one session may create or join over its life; one more is refused with "
            "room_error ROOM_LIMIT (the browser reconnects with a new session).",
            ge=1,
        ),
    ] = 32
    pending_jobs_per_session: Annotated[
        int,
        _doc(
            "Jobs of one session dispatched and not answered yet; an utterance whose jobs "
            "would go beyond it gets error TOO_MANY_PENDING_JOBS and no job. At most "
            "session.result_dedup_max.",
            ge=1,
        ),
    ] = 256


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    scheduling: SchedulingConfig = msgspec.field(default_factory=SchedulingConfig)
    session: SessionConfig = msgspec.field(default_factory=SessionConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the problem."""


def _sections() -> dict[str, type[msgspec.Struct]]:
    return {f.name: f.type for f in msgspec.structs.fields(Config)}


def iter_keys() -> Iterator[tuple[str, str, msgspec.structs.FieldInfo]]:
    """Yield ``(section, key, field)`` for every key, in declaration order."""
    for section, struct in _sections().items():
        for field in msgspec.structs.fields(struct):
            yield section, field.name, field


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    known = {(s, k): f for s, k, f in iter_keys()}
    out: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, raw: str, var: str) -> None:
        field = known.get((section, key))
        if field is None:
            raise ConfigError(f"{var}: no key {section}.{key}")
        value: Any = raw
        origin = getattr(field.type, "__origin__", None)
        if field.type is list or origin is list or "list[" in str(field.type):
            try:
                value = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise ConfigError(f"{var}: {section}.{key} takes a JSON list: {exc}") from None
        out.setdefault(section, {})[key] = value

    for var, (section, key) in ENV_ALIASES.items():
        if var in environ:
            put(section, key, environ[var], var)
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var or var in ENV_ALIASES:
            continue
        section, _, key = var[len(ENV_PREFIX) :].partition("__")
        put(section.lower(), key.lower(), raw, var)
    return out


def _merge(base: dict[str, Any], top: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in top.items():
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section}: expected a table")
        target.update(values)
    return merged


def _validate(raw: dict[str, Any]) -> Config:
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_name_key(str(exc))) from None
    sched = config.scheduling
    if sched.sent_retention_ms <= sched.job_timeout_ms * sched.max_attempts:
        raise ConfigError(
            "scheduling.sent_retention_ms: must outlast every attempt of a job "
            f"({sched.sent_retention_ms} <= job_timeout_ms x max_attempts = "
            f"{sched.job_timeout_ms * sched.max_attempts})"
        )
    if sched.stall_ms <= 2 * sched.sweep_interval_ms:
        raise ConfigError(
            "scheduling.stall_ms: must be more than twice sweep_interval_ms "
            f"({sched.stall_ms} <= 2 x {sched.sweep_interval_ms}), or ordinary sweeps count as "
            "Redis stalls and deadlines keep moving on"
        )
    if sched.default_max_concurrent_jobs > sched.max_concurrent_jobs_limit:
        raise ConfigError(
            "scheduling.default_max_concurrent_jobs: must not exceed max_concurrent_jobs_limit"
        )
    session = config.session
    if session.room_touch_interval_ms >= session.room_idle_ms:
        raise ConfigError(
            "session.room_touch_interval_ms: must be shorter than room_idle_ms "
            f"({session.room_touch_interval_ms} >= {session.room_idle_ms}), or an active room "
            "expires between two touches"
        )
    if config.limits.pending_jobs_per_session > session.result_dedup_max:
        raise ConfigError(
            "limits.pending_jobs_per_session: must not exceed session.result_dedup_max "
            f"({config.limits.pending_jobs_per_session} > {session.result_dedup_max}): a "
            "session forgets older unanswered jobs past it"
        )
    rt = config.runtime
    try:
        validate_runtime(rt)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.server.drain_unready_ms >= rt.drain_grace_ms > 0:
        raise ConfigError(
            "server.drain_unready_ms: must be shorter than runtime.drain_grace_ms "
            f"({config.server.drain_unready_ms} >= {rt.drain_grace_ms})"
        )
    if config.tracing.export_batch > config.tracing.queue_max:
        raise ConfigError(
            "tracing.export_batch: must not exceed tracing.queue_max "
            f"({config.tracing.export_batch} > {config.tracing.queue_max})"
        )
    auth = config.auth
    for key, values, least in (
        ("node_secrets", auth.node_secrets, MIN_SECRET_CHARS),
        ("node_token_keys", auth.node_token_keys, MIN_TOKEN_KEY_CHARS),
        ("session_token_keys", auth.session_token_keys, MIN_TOKEN_KEY_CHARS),
    ):
        if any(len(v) < least for v in values):
            # Which entry is short, never its value.
            raise ConfigError(f"auth.{key}: every entry must be at least {least} characters")
    if auth.tenant_renew_ms >= auth.tenant_lease_ms:
        raise ConfigError(
            "auth.tenant_renew_ms: must be shorter than tenant_lease_ms "
            f"({auth.tenant_renew_ms} >= {auth.tenant_lease_ms}), or live sessions stop counting"
        )
    if config.redis.mode == "sentinel" and not config.redis.sentinels:
        raise ConfigError("redis.sentinels: mode = sentinel needs at least one host:port")
    if config.redis.mode == "cluster" and not config.redis.url:
        raise ConfigError(
            "redis.url: mode = cluster needs the URL of a seed node (the embedded Redis of an "
            "empty redis.url is a single server)"
        )
    return config


def _name_key(message: str) -> str:
    # msgspec says "... - at `$.scheduling.job_timeout_ms`"; lead with the key, as operators grep it.
    text, sep, path = message.rpartition(" - at `$.")
    if not sep:
        return message
    return f"{path.rstrip('`')}: {text}"


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the effective config: defaults, then the TOML file, then environment, then overrides.

    ``path`` falls back to ``LINGUA_CONFIG``; no file at all is fine (defaults). Raises
    :class:`ConfigError` for an unreadable file, an unknown key or a bad value.
    """
    env = os.environ if environ is None else environ
    path = path or env.get("LINGUA_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        unknown = set(raw) - set(_sections())
        if unknown:
            raise ConfigError(f"{sorted(unknown)[0]}: unknown section in {path}")
    raw = _merge(raw, _env_overrides(env))
    if overrides:
        raw = _merge(raw, {k: dict(v) for k, v in overrides.items()})
    return _validate(raw)
