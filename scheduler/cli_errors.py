"""Exit codes of ``lingua-scheduler`` and the one-line sentence for each operational failure.

0 ok; 1 the command ran and found a problem (an orphan, a missing DLQ entry, a replica not
live); 2 bad usage (caught before Redis is touched); 3 Redis cannot be reached or used, the
configuration is invalid, or ``serve`` cannot listen on its port. An operational failure is one line on stderr (one JSON log line for
``serve``) saying what failed and what to do; a traceback means a bug.
"""

from __future__ import annotations

import errno
import re
from enum import IntEnum
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cross_instance.redis_server import RedisServerError
from scheduler.config import ConfigError

__all__ = ["REDIS_SCHEMES", "CliError", "ExitCode", "check_redis_url", "describe", "redact"]

REDIS_SCHEMES = ("redis", "rediss", "unix")
_CANNOT_LISTEN = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


class ExitCode(IntEnum):
    OK = 0
    PROBLEM = 1
    USAGE = 2
    UNAVAILABLE = 3


class CliError(Exception):
    """A failure already phrased for the operator, with its exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


def redact(url: str) -> str:
    """The URL without its password, fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigError` naming ``redis.url`` unless it is a Redis URL."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in REDIS_SCHEMES:
        schemes = ", ".join(f"{s}://" for s in REDIS_SCHEMES)
        raise ConfigError(
            f"redis.url: must start with {schemes} (got {redact(url)!r}); "
            "e.g. redis://127.0.0.1:6379/0"
        )


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def describe(exc: BaseException, redis_where: str) -> CliError | None:
    """The operator's sentence for an operational failure (also inside an exception group);
    None for anything else (a bug). ``redis_where`` names the Redis and where its URL came from."""
    for leaf in _leaves(exc):
        if isinstance(leaf, CliError):
            return leaf
        if isinstance(leaf, ConfigError):
            return CliError(f"configuration error: {_one_line(str(leaf))}", ExitCode.UNAVAILABLE)
        if isinstance(leaf, RedisServerError):
            return CliError(
                f"cannot start the embedded Redis: {_one_line(str(leaf))}",
                ExitCode.UNAVAILABLE,
            )
        if isinstance(leaf, OSError) and leaf.errno in _CANNOT_LISTEN:
            return CliError(
                f"cannot listen: {_one_line(str(leaf))}; is another serve running there? "
                "Choose another server.host / server.port (--port, LINGUA_SERVER__PORT) or "
                "server.ops_port",
                ExitCode.UNAVAILABLE,
            )
        if isinstance(leaf, AuthenticationError):
            return CliError(
                f"Redis at {redis_where} refused our credentials: {_one_line(str(leaf))}; "
                "check the user and password in redis.url (LINGUA_REDIS_URL) against its ACL",
                ExitCode.UNAVAILABLE,
            )
        if isinstance(leaf, NoPermissionError):
            return CliError(
                f"Redis at {redis_where} denied a command to our user: {_one_line(str(leaf))}; "
                "grant it the minimum ACL of docs/security.md",
                ExitCode.UNAVAILABLE,
            )
        if isinstance(leaf, MasterNotFoundError):
            # its text ends in the repr of a whole client: the sentence is ours
            return CliError(
                f"cannot reach {redis_where}: no Sentinel named its address; check "
                "redis.sentinels and redis.sentinel_master, and that the Sentinels run",
                ExitCode.UNAVAILABLE,
            )
        if isinstance(leaf, RedisConnectionError | RedisTimeoutError):
            return CliError(
                f"cannot reach Redis at {redis_where}: {_one_line(str(leaf))}; is it running? "
                "Set redis.url (LINGUA_REDIS_URL) to a reachable Redis",
                ExitCode.UNAVAILABLE,
            )
        if isinstance(leaf, ResponseError):
            return CliError(
                f"Redis at {redis_where} refused a command: {_one_line(str(leaf))}; check "
                "redis.url and redis.mode",
                ExitCode.UNAVAILABLE,
            )
        if isinstance(leaf, RedisError):
            return CliError(
                f"Redis at {redis_where} failed: {_one_line(str(leaf))}", ExitCode.UNAVAILABLE
            )
    return None
