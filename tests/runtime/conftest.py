"""Runtime fixtures: fast timings, in-process runtimes with recording handlers, peer processes.

Timings are small (presence TTL 600 ms, reclaim every 100 ms) so takeover, reclaim and DLQ
tests finish in about a second each; every test waits on conditions, never on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cross_instance.config import RedisConfig, RuntimeConfig
from cross_instance.envelope import Envelope
from cross_instance.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]

FAST: dict[str, int] = {
    "presence_ttl_ms": 600,
    "presence_refresh_ms": 100,
    "route_grace_ms": 800,
    "route_recheck_ms": 50,
    "inbox_block_ms": 100,
    "reclaim_interval_ms": 100,
    "reclaim_min_idle_ms": 200,
    "max_deliveries": 3,
    "takeover_interval_ms": 100,
    "takeover_lock_ttl_ms": 3000,
    "drain_grace_ms": 5000,
}


def fast_config(**overrides: Any) -> RuntimeConfig:
    return RuntimeConfig(**{**FAST, **overrides})


@dataclass
class Recorder:
    """A handler that records each successful delivery; payload "fail" raises, "fail-once"
    raises on the first attempt only."""

    delivered: list[Envelope] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lost: list[tuple[str, str]] = field(default_factory=list)
    fail_kinds: set[str] = field(default_factory=set)

    async def __call__(self, envelope: Envelope) -> None:
        n = self.attempts[envelope.message_id] = self.attempts.get(envelope.message_id, 0) + 1
        if envelope.payload == "fail" or envelope.kind in self.fail_kinds:
            raise LookupError(f"target {envelope.target_id} is not here")
        if envelope.payload == "fail-once" and n == 1:
            raise LookupError("first attempt fails")
        self.delivered.append(envelope)

    async def on_lost(self, kind: str, ident: str) -> None:
        self.lost.append((kind, ident))

    def ids(self) -> list[str]:
        return [e.message_id for e in self.delivered]


@pytest.fixture
def start_runtime(
    redis_config: RedisConfig,
) -> Callable[..., Any]:
    """``async with start_runtime(instance_id=..., **config) as (runtime, recorder):``"""

    @asynccontextmanager
    async def start(
        instance_id: str = "", recorder: Recorder | None = None, **overrides: Any
    ) -> AsyncIterator[tuple[Runtime, Recorder]]:
        rec = recorder or Recorder()
        runtime = Runtime(
            redis_config,
            fast_config(instance_id=instance_id, **overrides),
            rec,
            on_ownership_lost=rec.on_lost,
        )
        async with runtime:
            yield runtime, rec

    return start


@dataclass
class Peer:
    """A runtime in a child process (``python -m tests.runtime.peer``): claims ``nodes`` and
    records every successful delivery to the Redis list ``<prefix>:test:deliveries``."""

    redis_url: str
    key_prefix: str
    instance_id: str
    nodes: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    token: str = ""

    def start(self, timeout_s: float = 20.0) -> Peer:
        config = {**FAST, "instance_id": self.instance_id, **self.settings}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tests.runtime.peer",
                "--url", self.redis_url, "--prefix", self.key_prefix,
                "--config", json.dumps(config), "--nodes", ",".join(self.nodes),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = self.proc.stdout.readline()
        if not line.startswith("READY ") or time.monotonic() > deadline:
            raise RuntimeError(f"peer {self.instance_id} did not start: {line!r}")
        self.token = line.split()[1]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def peers(redis_config: RedisConfig) -> Iterator[Callable[..., Peer]]:
    started: list[Peer] = []

    def spawn(instance_id: str, nodes: list[str], **settings: Any) -> Peer:
        peer = Peer(redis_config.url, redis_config.key_prefix, instance_id, nodes, settings)
        started.append(peer.start())
        return peer

    yield spawn
    for peer in started:
        peer.stop()
