"""One replica and a few in-process peers on real Redis: local short circuit, inbox delivery,
reclaim, the delivery cap and the DLQ envelope, replay, dedup, ownership handover, holds."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cross_instance import admin
from cross_instance.config import RedisConfig
from cross_instance.envelope import (
    DeadLetter,
    Envelope,
    RuntimeFenced,
    RuntimeReply,
    Trail,
    new_message_id,
)
from cross_instance.redis_client import AnyRedis
from cross_instance.runtime import Runtime
from tests.runtime.conftest import Recorder, fast_config
from tests.waiting import until

pytestmark = pytest.mark.anyio


async def dlq_entries(redis: AnyRedis, runtime: Any) -> list[DeadLetter]:
    entries = await redis.xrange(runtime.keys.dlq())
    return [msgspec.json.decode(fields["dead"], type=DeadLetter) for _, fields in entries]


async def test_owner_local_short_circuit_uses_no_inbox(start_runtime: Any, redis: AnyRedis) -> None:
    async with start_runtime("a") as (a, rec):
        assert await a.claim_node("n1") is None
        result = await a.send_to_node("n1", "frame", "hello", trace_id="t1")
        assert (result.route, result.owner, result.entry_id) == ("local", a.token, "")
        [env] = rec.delivered
        assert (env.kind, env.target_id, env.payload, env.trace_id) == (
            "frame",
            "n1",
            "hello",
            "t1",
        )
        assert await redis.xlen(a.inbox) == 0
        assert a.metrics.delivered_local._value.get() == 1


async def test_delivery_between_replicas(start_runtime: Any, redis: AnyRedis) -> None:
    async with start_runtime("a") as (a, rec_a), start_runtime("b") as (b, rec_b):
        await b.claim_session("s1")
        result = await a.send_to_session("s1", "job_result", '{"x":1}')
        assert (result.route, result.owner) == ("remote", b.token)
        await until(lambda: len(rec_b.delivered) == 1)
        assert rec_b.delivered[0].message_id == result.message_id
        assert rec_b.delivered[0].origin == a.token
        assert rec_a.delivered == []
        await until(lambda: _zero(redis, b.inbox))
        assert b.metrics.delivered_remote._value.get() == 1
        assert a.metrics.forwarded._value.get() == 1


async def _zero(redis: AnyRedis, key: str) -> bool:
    return await redis.xlen(key) == 0


async def test_newest_claim_wins_and_old_owner_is_told(start_runtime: Any) -> None:
    async with start_runtime("a") as (a, rec_a), start_runtime("b") as (b, rec_b):
        await a.claim_node("n1")
        assert await b.claim_node("n1") == a.token
        await until(lambda: rec_a.lost == [("node", "n1")])
        # a's late clean-up cannot remove b's claim (compare-and-set on the token)
        assert await a.release_node("n1") is False
        result = await a.send_to_node("n1", "frame", "x")
        assert result.route == "remote" and result.owner == b.token
        await until(lambda: len(rec_b.delivered) == 1)
        assert rec_b.lost == []


async def test_reclaim_retries_a_failed_handler_once(start_runtime: Any) -> None:
    async with start_runtime("a") as (a, _), start_runtime("b") as (b, rec_b):
        await b.claim_node("n1")
        result = await a.send_to_node("n1", "frame", "fail-once")
        await until(lambda: len(rec_b.delivered) == 1)
        assert rec_b.attempts[result.message_id] == 2
        assert b.metrics.reclaimed._value.get() == 1
        # Counted after the done mark and the ack, two awaits after the handler returned.
        await until(lambda: b.metrics.redelivered._value.get() == 1)


async def test_cap_then_dlq_with_complete_envelope(start_runtime: Any, redis: AnyRedis) -> None:
    async with start_runtime("a") as (a, _), start_runtime("b") as (b, rec_b):
        await b.claim_node("n1")
        result = await a.send_to_node("n1", "job_assign", "fail", trace_id="tr-9")
        await until(lambda: b.metrics.dead_lettered.labels("max_deliveries")._value.get() == 1)
        assert rec_b.attempts[result.message_id] == 3  # max_deliveries, no extra attempt
        [dead] = await dlq_entries(redis, a)
        assert dead.reason == "max_deliveries"
        assert dead.envelope.message_id == result.message_id
        assert (dead.envelope.kind, dead.envelope.target_kind, dead.envelope.target_id) == (
            "job_assign",
            "node",
            "n1",
        )
        assert (dead.envelope.payload, dead.envelope.trace_id) == ("fail", "tr-9")
        assert dead.stream == b.inbox and dead.entry_id == result.entry_id
        assert dead.owner == b.token and dead.deliveries == 3
        assert dead.last_error.startswith("LookupError")
        assert 0 < dead.first_failure_ms < dead.last_failure_ms <= dead.dead_lettered_ms
        assert await redis.xlen(b.inbox) == 0  # acked and deleted from the inbox
        # a repeated move (crash between DLQ add and inbox ack) adds nothing
        await b.dead_letters.add(
            dead.envelope, "max_deliveries", Trail(deliveries=3, failure=None), owner=b.token
        )
        assert len(await dlq_entries(redis, a)) == 1


async def test_replay_from_dlq_delivers_once(
    start_runtime: Any, redis: AnyRedis, redis_config: Any
) -> None:
    async with start_runtime("a") as (a, _), start_runtime("b") as (b, rec_b):
        await b.claim_node("n1")
        rec_b.fail_kinds.add("job_assign")
        result = await a.send_to_node("n1", "job_assign", "p")
        await until(lambda: b.metrics.dead_lettered.labels("max_deliveries")._value.get() == 1)
        rec_b.fail_kinds.clear()
        [(dlq_id, _)] = await redis.xrange(a.keys.dlq())
        report = await admin.dlq_replay(redis, a.config, redis_config.key_prefix, ids=[dlq_id])
        assert report["replayed"] == [
            {"id": dlq_id, "to": b.token, "message_id": result.message_id}
        ]
        await until(lambda: len(rec_b.delivered) == 1)
        assert await redis.xlen(a.keys.dlq()) == 0
        # replaying again finds nothing; a duplicate copy of the message has no second effect
        again = await admin.dlq_replay(redis, a.config, redis_config.key_prefix, ids=[dlq_id])
        assert again["replayed"] == [] and again["missing"] == [dlq_id]
        await b.inbox_stream.append(b.token, rec_b.delivered[0], Trail(deliveries=0, failure=None))
        await until(lambda: b.metrics.duplicates._value.get() == 1)
        assert [e.message_id for e in rec_b.delivered] == [result.message_id]


async def test_no_owner_is_held_then_delivered_or_dead_lettered(
    start_runtime: Any, redis: AnyRedis
) -> None:
    async with start_runtime("a") as (a, _), start_runtime("b") as (b, rec_b):
        held = await a.send_to_session("s-later", "frame", "x")
        lost = await a.send_to_session("s-never", "frame", "y")
        assert held.route == lost.route == "held"
        await b.claim_session("s-later")  # the session reconnects within the grace
        await until(lambda: len(rec_b.delivered) == 1)
        assert rec_b.delivered[0].message_id == held.message_id
        await until(lambda: a.metrics.dead_lettered.labels("no_owner")._value.get() == 1)
        [dead] = await dlq_entries(redis, a)
        assert (dead.reason, dead.envelope.message_id, dead.owner) == (
            "no_owner",
            lost.message_id,
            "",
        )


async def test_hold_overflow_dead_letters_at_once(start_runtime: Any) -> None:
    async with start_runtime("a", route_hold_max=1) as (a, _):
        assert (await a.send_to_node("x1", "frame", "1")).route == "held"
        assert (await a.send_to_node("x2", "frame", "2")).route == "dead_letter"
        assert a.metrics.dead_lettered.labels("hold_overflow")._value.get() == 1


async def test_bad_input_is_refused_without_change(start_runtime: Any, redis: AnyRedis) -> None:
    async with start_runtime("a") as (a, _):
        for bad in ("", "has space", "x" * 300):
            with pytest.raises(ValueError):
                await a.claim_node(bad)
            with pytest.raises(ValueError):
                await a.send_to_node(bad, "frame", "p")
        with pytest.raises(ValueError):
            await a.send_to_node("n1", "", "p")
        with pytest.raises(ValueError):
            await a.send_to_node("n1", "ownership_lost", "p")
        assert await redis.hlen(a.keys.owners("node")) == 0


@pytest.mark.cluster
async def test_runtime_on_redis_cluster(redis_cluster: Any, key_prefix: str) -> None:
    config = RedisConfig(url=redis_cluster.url, mode="cluster", key_prefix=key_prefix)
    rec_a, rec_b = Recorder(), Recorder()
    a = Runtime(config, fast_config(instance_id="a"), rec_a, on_ownership_lost=rec_a.on_lost)
    b = Runtime(config, fast_config(instance_id="b"), rec_b)
    async with a, b:
        await a.claim_node("n1")
        await b.claim_session("s1")
        assert (await a.send_to_node("n1", "frame", "x")).route == "local"
        assert (await a.send_to_session("s1", "frame", "y")).route == "remote"
        poison = await a.send_to_session("s1", "frame", "fail")
        await until(lambda: len(rec_b.delivered) == 1)
        await until(lambda: b.metrics.dead_lettered.labels("max_deliveries")._value.get() == 1)
        assert await b.claim_node("n1") == a.token
        await until(lambda: rec_a.lost == [("node", "n1")])
        [(_, fields)] = await a.redis.xrange(a.keys.dlq())  # type: ignore[union-attr]
        assert poison.message_id in fields["dead"]
        await a.redis.delete(a.keys.dlq(), a.keys.dlq("dlq_index"))  # type: ignore[union-attr]


async def test_restarted_instance_fences_the_old_epoch(start_runtime: Any, redis: AnyRedis) -> None:
    # the old start's handler fails: its entry stays pending in the old inbox
    async with start_runtime("a", recorder=Recorder(fail_kinds={"frame"})) as (old, rec_old):
        await old.claim_node("n1")
        stuck = await old.inbox_stream.append(
            old.token, _envelope("n1"), Trail(deliveries=0, failure=None)
        )
        async with start_runtime("a") as (new, rec_new):  # same pod name, new start
            assert new.token != old.token
            assert await new.claim_node("n1") == old.token
            assert await old.release_node("n1") is False  # stale epoch cannot release
            await until(lambda: old.fenced)  # its presence refresh is refused
            with pytest.raises(RuntimeFenced):
                await old.claim_node("n2")
            # the new start takes the old inbox over: the stuck entry reaches n1's owner once
            await until(lambda: _gone(redis, old.inbox))
            assert [e.target_id for e in rec_new.delivered] == ["n1"]
            assert stuck[0] is RuntimeReply.OK and rec_old.delivered == [] and rec_old.attempts
            target = await new.ownership.resolve("node", "n1")
            assert target.live and target.owner == new.token


async def _gone(redis: AnyRedis, key: str) -> bool:
    return not await redis.exists(key)


def _envelope(target: str) -> Any:
    return Envelope(message_id=new_message_id(), kind="frame", target_kind="node",
                    target_id=target, payload="x", created_ms=1)  # fmt: skip


async def test_messages_for_an_ended_session_are_dropped_not_dead_lettered(
    start_runtime: Any, redis: AnyRedis
) -> None:
    async with start_runtime("a") as (a, _), start_runtime("b") as (b, rec_b):
        # Released by its owner (a closed tab): nothing can ever take it, no hold and no DLQ.
        await b.claim_session("s-gone")
        assert await b.release_session("s-gone")
        gone = await a.send_to_session("s-gone", "frame", "x", resumable=False)
        assert gone.route == "dropped"
        assert a.metrics.dropped.labels("ended")._value.get() == 1
        # Owned by b when sent; b's handler fails because the session ended meanwhile.
        await b.claim_session("s1")
        rec_b.fail_kinds.add("job_result")
        sent = await a.send_to_session("s1", "job_result", "{}", resumable=False)
        assert sent.route == "remote"
        await until(lambda: rec_b.attempts.get(sent.message_id, 0) >= 1)
        assert await b.release_session("s1")
        await until(lambda: b.metrics.dropped.labels("not_owned_here")._value.get() == 1)
        await until(lambda: _zero(redis, b.inbox))
        # A resumable send to the same ended target is still held (then dead-lettered).
        assert (await a.send_to_session("s-gone", "frame", "y")).route == "held"
        assert a.metrics.dropped.labels("ended")._value.get() == 1
        assert await dlq_entries(redis, a) == []


async def test_a_session_message_for_an_id_never_owned_is_held_then_dead_lettered(
    start_runtime: Any, redis: AnyRedis
) -> None:
    """Not known to have ended (never claimed, or its release is no longer remembered): it may
    be a session still starting, so it is waited for, then dead-lettered, never dropped."""
    async with start_runtime("a") as (a, _), start_runtime("b") as (b, rec_b):
        late = await a.send_to_session("s-late", "frame", "x", resumable=False)
        assert late.route == "held"
        await b.claim_session("s-late")
        await until(lambda: [e.message_id for e in rec_b.delivered] == [late.message_id])
        unknown = await a.send_to_session("s-unknown", "frame", "x", resumable=False)
        assert unknown.route == "held"
        await until(lambda: _dlq_depth(redis, a, 1))
        [dead] = await dlq_entries(redis, a)
        assert (dead.reason, dead.envelope.message_id) == ("no_owner", unknown.message_id)
        assert a.metrics.dropped.labels("ended")._value.get() == 0


async def _dlq_depth(redis: AnyRedis, runtime: Runtime, n: int) -> bool:
    return await redis.xlen(runtime.keys.dlq()) == n
