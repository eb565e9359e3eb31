"""The runtime under load and at the edge of its drain grace: thousands of held messages, a
reclaim pass in progress when the drain starts, sends still held when the drain is cut."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from cross_instance.config import RedisConfig
from cross_instance.envelope import Envelope
from cross_instance.redis_client import AnyRedis, connect
from cross_instance.redis_server import RedisServerProcess
from cross_instance.runtime import Runtime
from tests.runtime.conftest import Recorder, fast_config
from tests.waiting import until

pytestmark = pytest.mark.anyio


class FailsThenSlow(Recorder):
    """The first attempt of each message fails at once; every later one takes ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def __call__(self, envelope: Envelope) -> None:
        if envelope.message_id not in self.attempts:
            self.attempts[envelope.message_id] = 1
            raise LookupError("first attempt fails")
        self.attempts[envelope.message_id] += 1
        await anyio.sleep(self.seconds)
        self.delivered.append(envelope)


async def test_a_reclaim_pass_in_progress_does_not_hold_the_drain_past_its_grace(
    start_runtime: Any, redis: AnyRedis
) -> None:
    """A reclaim pass over many stuck entries (each well within the handler timeout) stops
    when the drain starts: the rest is handed over, within drain_grace_ms."""
    slow = FailsThenSlow(0.4)
    async with start_runtime("b") as (b, _):
        # The reclaim loop's own timer is pushed out: the test runs the pass exactly as the
        # loop does (under the lock), so it covers all 12 entries at once.
        async with start_runtime(
            "a", recorder=slow, drain_grace_ms=2500, reclaim_interval_ms=600000
        ) as (a, _):
            await a.claim_node("n1")
            sent = [await b.send_to_node("n1", "frame", f"m{i}") for i in range(12)]
            await until(lambda: all(slow.attempts.get(s.message_id) == 1 for s in sent))
            await anyio.sleep(0.3)  # > reclaim_min_idle_ms

            async def reclaim_pass() -> None:
                async with a.consumer.reclaim_lock:
                    await a.reclaim_once()

            async with anyio.create_task_group() as tg:
                tg.start_soon(reclaim_pass)
                await until(lambda: any(slow.attempts.get(s.message_id) == 2 for s in sent))
                started = time.monotonic()
                with anyio.move_on_after(a.config.drain_grace_ms / 1000) as scope:
                    await a.drain()
                took = time.monotonic() - started
                assert not scope.cancelled_caught, f"drain cut at its grace ({took:.1f}s)"
                assert not await redis.exists(a.inbox), "inbox not handed over"


async def test_sends_still_held_when_the_drain_is_cut_all_reach_the_dlq(
    redis_config: Any, redis: AnyRedis
) -> None:
    """Leaving with the drain cut (grace 0), every send still held goes to the DLQ: none
    vanishes although its sender was told route="held"."""
    config = redis_config  # default command_timeout_ms (5000)
    rt = Runtime(
        config,
        fast_config(instance_id="a", route_grace_ms=20000, takeover_lock_ttl_ms=30000,
                    drain_grace_ms=0),
        Recorder(),
    )  # fmt: skip
    n = 3000
    async with rt:
        for i in range(n):
            sent = await rt.send_to_node(f"gone{i}", "frame", "x")
            assert sent.route == "held"
    assert await redis.xlen(rt.keys.dlq()) == n, "held sends lost on exit"


async def test_many_held_messages_do_not_exhaust_the_connection_pool(
    start_runtime: Any, redis: AnyRedis, caplog: Any
) -> None:
    """Held messages are re-checked concurrently, but within a share of the connection pool
    (redis.max_connections): their re-checks and the replica's other commands never fail with
    MaxConnectionsError."""
    async with start_runtime("b") as (b, _):
        async with start_runtime(
            "a", route_grace_ms=5000, drain_grace_ms=6000, takeover_lock_ttl_ms=30000
        ) as (a, _):
            await b.claim_node("nb")
            for i in range(500):  # ownerless targets (e.g. nodes reconnecting): held
                assert (await a.send_to_node(f"gone{i}", "frame", "x")).route == "held"
            errors: list[BaseException] = []

            async def sender(k: int) -> None:
                for i in range(20):
                    try:
                        await a.send_to_node("nb", "frame", f"m{k}-{i}")
                    except Exception as exc:
                        errors.append(exc)
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                for k in range(8):  # 8 concurrent senders: far below the pool's 64
                    tg.start_soon(sender, k)
            failed_rechecks = [r for r in caplog.records if "re-checking" in r.getMessage()]
            assert not failed_rechecks, f"{len(failed_rechecks)} rechecks failed: " + repr(
                failed_rechecks[0].exc_info[1]
            )
            assert not errors, f"{len(errors)}/160 sends failed, first: {errors[0]!r}"


async def test_held_sends_reach_the_dlq_on_exit_when_redis_is_slow(
    fresh_redis: RedisServerProcess, key_prefix: str
) -> None:
    """What heavy load does to the exit, made exact: Redis answers the exit's first DLQ write
    only shortly before redis.command_timeout_ms (its writes are paused). The held sends are
    still all dead-lettered, none vanishes and none is counted lost."""
    config = RedisConfig(url=fresh_redis.url, key_prefix=key_prefix, command_timeout_ms=1000)
    rt = Runtime(
        config,
        fast_config(instance_id="a", route_grace_ms=20000, takeover_lock_ttl_ms=30000,
                    drain_grace_ms=0),
        Recorder(),
    )  # fmt: skip
    n = 3000
    async with rt:
        for i in range(n):
            assert (await rt.send_to_node(f"gone{i}", "frame", "x")).route == "held"
        redis = rt.redis
        assert redis is not None
        # Writes (scripts included) wait 900 ms: the exit has 100 ms of its first bound left.
        await redis.execute_command("CLIENT", "PAUSE", 900, "WRITE")
    check = connect(config)
    try:
        assert await check.xlen(rt.keys.dlq()) == n, "held sends lost on exit"
    finally:
        await check.aclose()
    assert _lost(rt) == 0


async def test_held_sends_that_cannot_reach_the_dlq_on_exit_are_counted_lost(
    fresh_redis: RedisServerProcess, key_prefix: str, caplog: Any
) -> None:
    """Redis gone at exit: the held sends cannot be dead-lettered. The exit still ends (its
    DLQ writes are bounded), and every one of them is logged as an error and counted in
    lingua_runtime_lost_total{reason="dlq_unreachable"}: lost, but never silently."""
    config = RedisConfig(
        url=fresh_redis.url, key_prefix=key_prefix, command_timeout_ms=500, retry_attempts=1
    )
    rt = Runtime(
        config,
        fast_config(instance_id="a", route_grace_ms=20000, takeover_lock_ttl_ms=30000,
                    drain_grace_ms=0),
        Recorder(),
    )  # fmt: skip
    n = 200
    with anyio.fail_after(30):
        async with rt:
            for i in range(n):
                assert (await rt.send_to_node(f"gone{i}", "frame", "x")).route == "held"
            fresh_redis.kill()
    assert _lost(rt) == n
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "lost" in r.getMessage()]
    assert errors, "no error logged for the lost sends"
    assert sum(getattr(r, "count", 0) for r in errors) == n


def _lost(rt: Runtime) -> float:
    value = rt.metrics.registry.get_sample_value(
        "lingua_runtime_lost_total", {"reason": "dlq_unreachable"}
    )
    return value or 0.0
