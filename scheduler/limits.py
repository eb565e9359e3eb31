"""Limits on what one replica, address, connection or session may use (docs/security.md, "Limits").

Pure decisions, ``now`` in: the gateways and the replica ask, answer the peer (an ``error`` or
``room_error`` frame with a machine code and a sentence, or a close code) and count the breach in
``lingua_limit_breaches_total{limit}``, one label per name of :data:`LIMITS`.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from scheduler.config import LimitsConfig

__all__ = [
    "LIMITS",
    "PENDING_JOBS_CODE",
    "RATE_LIMITED_CODE",
    "ROOM_LIMIT_CODE",
    "AddressCounts",
    "Limit",
    "TokenBucket",
    "client_address",
    "message_bucket",
    "pending_jobs_message",
    "pending_jobs_within",
    "rate_limited_message",
    "room_limit_message",
]

Limit = Literal[
    "connections",
    "connections_per_address",
    "session_message_rate",
    "node_message_rate",
    "frame_bytes",
    "utterance_bytes",
    "rooms_per_session",
    "room_members",
    "pending_jobs",
]
# Every label of lingua_limit_breaches_total, present at 0 from the start.
LIMITS: Final[tuple[Limit, ...]] = get_args(Limit)

RATE_LIMITED_CODE: Final = "RATE_LIMITED"
ROOM_LIMIT_CODE: Final = "ROOM_LIMIT"
PENDING_JOBS_CODE: Final = "TOO_MANY_PENDING_JOBS"


class TokenBucket:
    """``rate`` messages per second on average, ``burst`` at once: starts full, one token per
    message, refilled continuously up to ``burst``."""

    def __init__(self, rate_per_s: int, burst: int, now_ms: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.at_ms = now_ms
        self.refused = 0  # messages refused since the last one taken

    def take(self, now_ms: int) -> bool:
        """One message at ``now_ms``: True if within the limit (a token is spent), else False
        (nothing is spent: a peer that stops sending gets its allowance back)."""
        elapsed = max(0, now_ms - self.at_ms)  # a clock stepped back refills nothing
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate_per_s / 1000)
        self.at_ms = now_ms
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused = 0
            return True
        self.refused += 1
        return False


def message_bucket(config: LimitsConfig, kind: str, now_ms: int) -> TokenBucket:
    """The message rate of a new ``/ws/node`` (``kind`` "node") or ``/ws/session`` connection."""
    if kind == "node":
        return TokenBucket(config.node_messages_per_second, config.node_message_burst, now_ms)
    return TokenBucket(config.session_messages_per_second, config.session_message_burst, now_ms)


class AddressCounts:
    """Open connections per client address on one replica; ``limit`` 0 counts nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count one more connection from ``address``; False (nothing counted) at the limit."""
        if self.limit == 0:
            return True
        held = self.open.get(address, 0)
        if held >= self.limit:
            return False
        self.open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """A connection :meth:`admit` counted has closed."""
        if self.limit == 0:
            return
        held = self.open.get(address, 0) - 1
        if held > 0:
            self.open[address] = held
        else:
            self.open.pop(address, None)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: int) -> str:
    """The address a connection counts against: the peer's, unless ``trusted_proxies`` proxies
    stand in front of the replica; then the entry of ``X-Forwarded-For`` the outermost trusted
    one appended (each proxy appends the address it saw, so entries further left are whatever
    the client wrote). A header shorter than that (a proxy bypassed) leaves the peer's."""
    if trusted_proxies == 0 or not forwarded_for:
        return peer
    entries = [e.strip() for e in forwarded_for.split(",") if e.strip()]
    if len(entries) < trusted_proxies:
        return peer
    return entries[-trusted_proxies]


def pending_jobs_within(pending: int, new_jobs: int, limit: int) -> bool:
    """Whether a session with ``pending`` unanswered jobs may add ``new_jobs`` (one utterance's)."""
    return pending + new_jobs <= limit


def rate_limited_message(bucket: TokenBucket) -> str:
    return (
        f"Too many messages: this connection may send {bucket.rate_per_s} per second on "
        f"average ({bucket.burst} at once), and the ones beyond that were dropped."
    )


def room_limit_message(limit: int) -> str:
    return (
        f"This session has already created or joined {limit} rooms, the most one session may. "
        "Reconnect to start a new session."
    )


def pending_jobs_message(limit: int) -> str:
    return (
        f"Too many utterances are still being translated ({limit} translations at most): "
        "this one was not translated. Please wait for the results and say it again."
    )
