"""Tracing off needs nothing of OpenTelemetry (``make run`` installs no tracing extra).

Checked in a fresh interpreter where OpenTelemetry cannot be imported (this test process has it,
for the tracing tests): a real replica takes one utterance end to end, and no module of ours
even tried to import it. With tracing on, the same replica refuses to start, naming the extra,
which also shows that the check sees an attempt when there is one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import orjson
import pytest

from cross_instance.redis_client import AnyRedis

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def run_without_opentelemetry(url: str, prefix: str, tracing: str) -> dict[str, object]:
    command = [sys.executable, "-m", "tests.gateways.one_utterance", url, prefix, tracing]
    with anyio.fail_after(60):
        done = await anyio.run_process(command, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report: dict[str, object] = orjson.loads(done.stdout.decode().strip().splitlines()[-1])
    return report


async def test_with_tracing_off_a_replica_works_and_never_imports_opentelemetry(
    redis: AnyRedis, redis_url: str, key_prefix: str
) -> None:
    report = await run_without_opentelemetry(redis_url, key_prefix, "off")
    assert report == {"importers": [], "error": ""}


async def test_with_tracing_on_and_no_extra_a_replica_refuses_to_start_naming_it(
    redis: AnyRedis, redis_url: str, key_prefix: str
) -> None:
    report = await run_without_opentelemetry(redis_url, key_prefix, "on")
    assert report["importers"] == ["scheduler.tracing_otel"]
    assert report["error"] == (
        "ConfigError: tracing.enabled: OpenTelemetry is not installed here (opentelemetry); "
        "install the extra: pip install 'lingua-scheduler[tracing]'"
    )
