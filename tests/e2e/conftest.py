"""Fixtures for end-to-end tests: real ``serve`` replicas on a real Redis.

Replicas are shared by the tests of a module (starting a process costs a second); every test uses
its own language pair, so the nodes one test registers are never candidates in another.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator

import pytest

from tests.e2e.daemons import Replica

# Short intervals so failure paths finish in seconds; every one is a config key.
FAST_SETTINGS = {
    "LINGUA_SESSION__PAUSE_MS": "400",
    "LINGUA_SESSION__MAX_DURATION_MS": "1000",
    "LINGUA_SESSION__HANGOVER_AUTO_MS": "0",
    "LINGUA_SESSION__HANGOVER_MANUAL_MS": "0",
    "LINGUA_SCHEDULING__JOB_TIMEOUT_MS": "1500",
    "LINGUA_SCHEDULING__MAX_ATTEMPTS": "2",
    "LINGUA_SCHEDULING__SWEEP_INTERVAL_MS": "100",
    "LINGUA_RUNTIME__PRESENCE_TTL_MS": "1500",
    "LINGUA_RUNTIME__PRESENCE_REFRESH_MS": "300",
    "LINGUA_RUNTIME__DRAIN_GRACE_MS": "5000",
    "LINGUA_RUNTIME__ROUTE_GRACE_MS": "3000",
    "LINGUA_SERVER__DRAIN_UNREADY_MS": "300",
}

_pairs = itertools.count()
LANGS = [
    "zh",
    "en",
    "ja",
    "ko",
    "de",
    "fr",
    "es",
    "it",
    "ru",
    "pt",
    "ar",
    "hi",
    "vi",
    "th",
    "id",
    "tr",
    "pl",
    "nl",
    "sv",
    "uk",
]


@pytest.fixture
def pair() -> tuple[str, str]:
    """A directed language pair no other test uses."""
    n = next(_pairs)
    return LANGS[n % len(LANGS)], LANGS[(n // len(LANGS) + n + 1) % len(LANGS)]


@pytest.fixture(scope="module")
def cluster_prefix() -> str:
    return f"e2e{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def replicas(redis_url: str, cluster_prefix: str) -> Iterator[list[Replica]]:
    started = [
        Replica(redis_url, f"r{i}", cluster_prefix, dict(FAST_SETTINGS)).start() for i in range(3)
    ]
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()
