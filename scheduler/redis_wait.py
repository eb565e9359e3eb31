"""Riding out a Redis outage or stall on the paths a user waits on (issue 12, build 2).

A node's ``job_result`` and a session's dispatch must not fail because Redis restarted or stalled
for a few seconds: :meth:`RedisWait.ride_out` retries the call with capped exponential backoff
(``redis.retry_backoff_base_ms`` .. ``redis.retry_backoff_cap_ms``) for at most
``redis.outage_wait_ms`` in all, then raises :class:`RedisUnavailable` for the caller to answer
an explicit error. Only errors that say Redis is away are retried (connection refused or reset,
a timeout, a server still loading its AOF); a script's refusal is an answer and is raised at once.

A retried call may have run before its reply was lost (a timeout, a reset after the command
was sent), here or in the Redis client's own retries: the scripts tell a caller's own earlier
run from another's (``complete_job``'s nonce, ``dispatch_job`` answering the job id the caller
minted). While a call is waiting, :attr:`RedisWait.waiting` is non-zero and readiness is false.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from cross_instance.config import RedisConfig

__all__ = ["REDIS_AWAY", "RedisUnavailable", "RedisWait"]

log = logging.getLogger("lingua.redis_wait")

T = TypeVar("T")

# What Redis raises when it is away (BusyLoadingError is a ConnectionError: listed for the
# reader); ConnectionResetError is a reset the client did not wrap.
REDIS_AWAY: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    BusyLoadingError,
    ConnectionResetError,
)


class RedisUnavailable(Exception):
    """Redis did not answer within ``redis.outage_wait_ms``."""


class RedisWait:
    def __init__(
        self, config: RedisConfig, on_outcome: Callable[[str, str], None] | None = None
    ) -> None:
        self.wait_s = config.outage_wait_ms / 1000
        self.base_s = config.retry_backoff_base_ms / 1000
        self.try_s = config.command_timeout_ms / 1000
        self.cap_s = config.retry_backoff_cap_ms / 1000
        self.on_outcome = on_outcome or (lambda path, outcome: None)
        self.waiting = 0  # calls waiting for Redis now (readiness is false meanwhile)
        self.down_since: float | None = None  # monotonic start of the outage, None when up

    def answered(self) -> None:
        """Redis answered another call (the sweep): the outage is over."""
        self.down_since = None

    async def ride_out(self, path: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until it answers or ``redis.outage_wait_ms`` has passed (then raise
        :class:`RedisUnavailable`). ``path`` names the caller in logs and metrics.

        The wait is counted from the start of the outage, not of each call: calls queued behind
        one another (a session's dispatches, a node's results) each get one try, then give up
        together once Redis has been away ``redis.outage_wait_ms``, instead of one after the
        other."""
        start = time.monotonic()
        give_up = start + self.wait_s
        if self.down_since is not None:
            give_up = min(give_up, self.down_since + self.wait_s)
        tries = 0
        try:
            while True:
                error: BaseException | None = None
                # one try at least (of up to a command's timeout), however long Redis has been
                # away: it may be back, and the sweep has not said so yet
                left = max(give_up - time.monotonic(), 0 if tries else self.try_s)
                if left > 0:
                    with anyio.move_on_after(left):
                        try:
                            value = await call()
                        except REDIS_AWAY as exc:
                            error = exc
                        else:
                            self.down_since = None
                            if tries:
                                self.on_outcome(path, "through")
                                log.info("redis answered after %d tries (%s)", tries + 1, path)
                            return value
                if self.down_since is None or start < self.down_since:
                    self.down_since = start
                if tries == 0:
                    self.waiting += 1
                    log.warning("redis unavailable (%s): waiting: %r", path, error)
                tries += 1
                left = give_up - time.monotonic()
                if left <= 0:
                    self.on_outcome(path, "gave_up")
                    raise RedisUnavailable(
                        f"Redis did not answer within {self.wait_s:g} s ({path}): {error!r}"
                    )
                await anyio.sleep(min(left, self.cap_s, self.base_s * 2 ** min(tries - 1, 16)))
        finally:
            if tries:
                self.waiting -= 1
