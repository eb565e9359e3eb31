"""A deliberately broken build, for the suite's self-test: ``python -m tests.chaos.broken serve``.

It is the daemon with, across the whole cluster (a Redis ``SET NX`` makes each break happen
once), the breaks named in ``CHAOS_BREAK`` (comma-separated):

* ``drop_result``: the session's replica silently drops the first ``job_result`` it should
  relay to its client (no frame, no error, no metric);
* ``leak_slot``: after the first completed job, one slot of that node stays reserved.

The accounting must report exactly one lost utterance and one leaked slot.
"""

from __future__ import annotations

import os
from typing import Any

from redis import Redis

from scheduler import protocol as wire
from scheduler.cli import main
from scheduler.jobs import JobLifecycle
from tests.chaos.state import leak_one_slot

BREAKS = set(os.environ.get("CHAOS_BREAK", "").split(","))
PREFIX = os.environ["LINGUA_REDIS__KEY_PREFIX"]
_redis = Redis.from_url(os.environ["LINGUA_REDIS_URL"])


def _first(what: str) -> bool:
    """True once in the whole cluster."""
    return bool(_redis.set(f"{PREFIX}:chaos-break:{what}", "1", nx=True))


_deliver = JobLifecycle.deliver
_on_result = JobLifecycle.on_result


async def _broken_deliver(self: JobLifecycle, session: Any, delivery: Any, *rest: Any) -> None:
    if "drop_result" in BREAKS and isinstance(delivery, wire.JobResult) and _first("drop"):
        return
    await _deliver(self, session, delivery, *rest)


async def _broken_on_result(self: JobLifecycle, node_id: str, message: wire.JobResult) -> None:
    await _on_result(self, node_id, message)
    if "leak_slot" in BREAKS and _first("leak"):
        leak_one_slot(_redis, PREFIX, node_id)


JobLifecycle.deliver = _broken_deliver  # type: ignore[method-assign]
JobLifecycle.on_result = _broken_on_result  # type: ignore[method-assign]

raise SystemExit(main())
