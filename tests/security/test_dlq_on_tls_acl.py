"""The operator CLI's DLQ commands (list, show, replay, purge) and the runtimes that dead-letter,
against the TLS-only, ACL-only Redis with the daemon's user (tests/security/conftest.py).

The test is tests/runtime/test_cli.py's own, imported so it is the same test. Its runtimes get a
longer presence TTL than tests/runtime's 600 ms: the refresh must fit in a third of it, and a TLS
handshake on a loaded machine can take longer than that. It runs in its own module, before the
e2e module starts its replicas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from cross_instance.config import RedisConfig
from cross_instance.runtime import Runtime
from tests.runtime.conftest import Recorder, fast_config
from tests.runtime.test_cli import cli, test_ownership_inbox_and_dlq_commands

__all__ = ["cli", "test_ownership_inbox_and_dlq_commands"]

pytestmark = pytest.mark.anyio

PRESENCE = {"presence_ttl_ms": 3000, "presence_refresh_ms": 500}


@pytest.fixture
def start_runtime(redis_config: RedisConfig) -> Callable[..., Any]:
    """tests/runtime/conftest.py's, with ``PRESENCE``."""

    @asynccontextmanager
    async def start(
        instance_id: str = "", recorder: Recorder | None = None, **overrides: Any
    ) -> AsyncIterator[tuple[Runtime, Recorder]]:
        rec = recorder or Recorder()
        config = fast_config(instance_id=instance_id, **{**PRESENCE, **overrides})
        async with Runtime(redis_config, config, rec, on_ownership_lost=rec.on_lost) as runtime:
            yield runtime, rec

    return start
