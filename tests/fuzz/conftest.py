"""Two ``serve`` replicas on one Redis for all the fuzz tests, with a small
``server.max_frame_bytes`` so oversized frames are cheap to send (the guard is the same at any
size)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import FAST_SETTINGS
from tests.e2e.daemons import Replica

__all__ = ["MAX_FRAME_BYTES"]

MAX_FRAME_BYTES = 64 * 1024


@pytest.fixture(scope="package")
def fuzzed_replicas(redis_url: str) -> Iterator[list[Replica]]:
    prefix = f"e2efuzz{secrets.token_hex(3)}"
    tuned = {
        **FAST_SETTINGS,
        "LINGUA_SERVER__MAX_FRAME_BYTES": str(MAX_FRAME_BYTES),
        # Nothing here tests replica failure: a presence that survives a starved machine keeps
        # a peer from taking a live replica's inbox over mid-fuzz.
        "LINGUA_RUNTIME__PRESENCE_TTL_MS": "6000",
        "LINGUA_RUNTIME__PRESENCE_REFRESH_MS": "1000",
    }
    started: list[Replica] = []
    try:
        for name in ("fz0", "fz1"):
            started.append(Replica(redis_url, name, prefix, dict(tuned)).start())
        yield started
    finally:
        for replica in started:
            replica.stop()
