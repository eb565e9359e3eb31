"""A target whose owner merely looks not live is waited for, never dropped (issue 12, item 1).

Only a target its owner released has ended: a non-resumable message (for a client session) is
dropped then. An owner whose presence lapsed (a Redis stall past the presence TTL, a replica
whose refresh hangs) may come back within the route grace: the message is held and delivered,
or dead-lettered ``no_owner`` when it does not. Each test has a private redis-server: one pauses
it (``CLIENT PAUSE``), which would stall every other test's runtimes on a shared one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import msgspec
import pytest

from cross_instance.config import RedisConfig
from cross_instance.envelope import DeadLetter, Envelope, RuntimeReply, Trail, new_message_id
from cross_instance.ownership import Target
from cross_instance.presence import token_live
from cross_instance.redis_client import AnyRedis
from cross_instance.redis_server import RedisServerProcess
from cross_instance.routing import Step, next_step
from cross_instance.runtime import Runtime
from tests.runtime.conftest import Recorder
from tests.waiting import until

pytestmark = pytest.mark.anyio

# No takeover: a replica whose presence lapsed keeps its ids, so routing alone is under test
# (a takeover would release them, and the target would have ended).
NO_TAKEOVER: dict[str, Any] = {"takeover_interval_ms": 60_000}


@pytest.fixture
def redis_config(fresh_redis: RedisServerProcess, key_prefix: str) -> RedisConfig:
    return RedisConfig(url=fresh_redis.url, key_prefix=key_prefix)


async def dlq_entries(redis: AnyRedis, runtime: Runtime) -> list[DeadLetter]:
    entries = await redis.xrange(runtime.keys.dlq())
    return [msgspec.json.decode(fields["dead"], type=DeadLetter) for _, fields in entries]


async def _lapsed(redis: AnyRedis, runtime: Runtime) -> bool:
    return not await token_live(redis, runtime.keys, runtime.token)


@contextmanager
def stalled_refresh(runtime: Runtime) -> Iterator[None]:
    """Within: the replica's presence refresh hangs (each attempt times out, as in a stall),
    so its presence lapses while it keeps owning what it owned. After: it refreshes again (and
    can leave quickly)."""

    async def hang() -> bool:
        await anyio.sleep_forever()
        return False

    runtime.presence.refresh = hang  # type: ignore[method-assign]
    try:
        yield
    finally:
        del runtime.presence.refresh  # the class's method again


async def test_a_session_message_sent_across_a_redis_stall_reaches_its_live_owner(
    start_runtime: Any, redis: AnyRedis
) -> None:
    """Observation 1: after CLIENT PAUSE past the presence TTL, every presence looks lapsed
    until its next refresh; a result routed in that window used to be dropped as "target
    ended" although its session's replica was alive."""
    async with (
        start_runtime("a", **NO_TAKEOVER) as (a, rec_a),
        start_runtime("b", route_grace_ms=3000, takeover_lock_ttl_ms=10_000, **NO_TAKEOVER) as (
            b,
            _,
        ),
    ):
        await a.claim_session("s1")
        stall_ms = 3 * a.config.presence_ttl_ms
        await redis.execute_command("CLIENT", "PAUSE", stall_ms, "ALL")
        # Queued behind the pause; it runs when the pause ends, before a's next refresh.
        sent = await b.send_to_session("s1", "job_result", "{}", resumable=False)
        assert sent.route == "held", sent
        await until(lambda: rec_a.ids() == [sent.message_id])
        assert b.metrics.dropped.labels("ended")._value.get() == 0
        assert await dlq_entries(redis, b) == []
        assert not a.fenced


async def test_a_session_message_whose_owner_never_comes_back_is_dead_lettered(
    start_runtime: Any, redis: AnyRedis
) -> None:
    async with (
        start_runtime("a", **NO_TAKEOVER) as (a, rec_a),
        start_runtime("b", **NO_TAKEOVER) as (b, _),
    ):
        await a.claim_session("s1")
        with stalled_refresh(a):
            await until(lambda: _lapsed(redis, a))
            sent = await b.send_to_session("s1", "job_result", "{}", resumable=False)
            assert sent.route == "held"
            await until(lambda: _dlq_size(redis, b, 1))
        [dead] = await dlq_entries(redis, b)
        assert (dead.reason, dead.owner, dead.envelope.message_id) == (
            "no_owner",
            a.token,
            sent.message_id,
        )
        assert b.metrics.dead_lettered.labels("no_owner")._value.get() == 1
        assert b.metrics.dropped.labels("ended")._value.get() == 0
        assert rec_a.delivered == []


async def test_a_held_session_message_is_dropped_once_its_owner_releases_the_session(
    start_runtime: Any, redis: AnyRedis
) -> None:
    """The owner looked not live, then closed the session (it released it): it has ended."""
    async with (
        start_runtime("a", **NO_TAKEOVER) as (a, rec_a),
        start_runtime("b", route_grace_ms=3000, takeover_lock_ttl_ms=10_000, **NO_TAKEOVER) as (
            b,
            _,
        ),
    ):
        await a.claim_session("s1")
        with stalled_refresh(a):
            await until(lambda: _lapsed(redis, a))
            sent = await b.send_to_session("s1", "job_result", "{}", resumable=False)
            assert sent.route == "held"
            assert await a.release_session("s1")
            await until(lambda: b.metrics.dropped.labels("ended")._value.get() == 1)
        assert len(b.holds) == 0
        assert await dlq_entries(redis, b) == []
        assert rec_a.delivered == []


async def _dlq_size(redis: AnyRedis, runtime: Runtime, n: int) -> bool:
    return await redis.xlen(runtime.keys.dlq()) == n


@pytest.mark.parametrize(
    ("target", "resumable", "draining", "step"),
    [
        (Target("b@1", live=True, ended=False), False, False, "inbox"),
        (Target("a@1", live=True, ended=False), False, False, "here"),
        (Target("a@1", live=True, ended=False), False, True, "hold"),
        # An owner that looks not live has ended nothing: wait for it.
        (Target("b@1", live=False, ended=False), False, False, "hold"),
        (Target("", live=False, ended=False), False, False, "hold"),  # never owned
        (Target("", live=False, ended=True), False, False, "drop"),  # released by its owner
        (Target("", live=False, ended=True), True, False, "hold"),  # a node may come back
    ],
)
def test_only_a_released_target_drops_a_non_resumable_message(
    target: Target, resumable: bool, draining: bool, step: Step
) -> None:
    assert next_step(target, resumable, "a@1", draining) == step


async def test_a_replica_refreshing_late_after_a_redis_stall_is_not_taken_over(
    start_runtime: Any, redis: AnyRedis
) -> None:
    """After CLIENT PAUSE past the presence TTL every presence has lapsed. The first replica to
    refresh must not take the others over before they had one presence TTL to refresh: a
    replica that is alive but refreshes a little later than its peer keeps its sessions."""
    timings = {"presence_ttl_ms": 3000, "takeover_lock_ttl_ms": 5000}
    async with (
        start_runtime("a", **timings) as (a, rec_a),
        start_runtime("b", **timings) as (b, _),
    ):
        await a.claim_session("s1")
        tried: list[tuple[str, RuntimeReply]] = []
        begin = b.takeover._begin

        async def recorded(dead: str) -> RuntimeReply:
            tried.append((dead, code := await begin(dead)))
            return code

        b.takeover._begin = recorded  # type: ignore[method-assign]
        with stalled_refresh(a):
            stall_ms = a.config.presence_ttl_ms + 500
            await redis.execute_command("CLIENT", "PAUSE", stall_ms, "ALL")
            await redis.ping()  # answered once the pause is over
            # b is back and a still looks dead to it: b tries to take a's inbox over (until b
            # itself refreshed, it is refused FENCED: it is not live either).
            await until(lambda: tried.count((a.token, RuntimeReply.TOO_SOON)) >= 3)
        await until(lambda: token_live(redis, a.keys, a.token))
        # ALIVE too: a try that listed a as lapsed just before a's refresh landed is refused so.
        refusals = {RuntimeReply.FENCED, RuntimeReply.TOO_SOON, RuntimeReply.ALIVE}
        assert {code for _, code in tried} <= refusals
        assert not a.fenced
        assert b.metrics.takeovers._value.get() == 0
        sent = await b.send_to_session("s1", "job_result", "{}", resumable=False)
        assert sent.route == "remote"
        await until(lambda: rec_a.ids() == [sent.message_id])


async def test_a_dead_replicas_session_messages_are_dropped_at_its_takeover_not_held(
    start_runtime: Any, redis: AnyRedis
) -> None:
    """A replica taken over is fenced for good: its sessions have ended. The holder releases
    their ids before re-routing the inbox, so a session message in it is dropped (counted) at
    once rather than held for the grace and dead-lettered."""
    grace = {"route_grace_ms": 3000, "takeover_lock_ttl_ms": 10_000}
    async with (
        start_runtime(
            "a", Recorder(fail_kinds={"job_result"}), reclaim_min_idle_ms=60_000, **NO_TAKEOVER
        ) as (a, _),
        start_runtime("b", **grace) as (b, _),
    ):
        await a.claim_session("s1")
        stuck = Envelope(message_id=new_message_id(), kind="job_result", target_kind="session",
                         target_id="s1", payload="{}", created_ms=1, resumable=False)  # fmt: skip
        assert (await a.inbox_stream.append(a.token, stuck, Trail()))[0] is RuntimeReply.OK
        with stalled_refresh(a):
            await until(lambda: b.metrics.takeovers._value.get() == 1, limit_s=2.5)
        assert b.metrics.dropped.labels("ended")._value.get() == 1
        assert await dlq_entries(redis, b) == []
        assert (await b.ownership.resolve("session", "s1")).ended
