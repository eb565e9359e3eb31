"""How the runtime behaves when things go wrong around it: a hand-over that cannot finish, a lost
lease race, a slow or hung handler, Redis errors on the read connection, a full inbox, a drain
with many ownerless entries. Each test fails on the defect it is named after."""

from __future__ import annotations

import json
from typing import Any

import anyio
import msgspec
import pytest

from cross_instance import admin, dead_letters, inbox, ownership, routing
from cross_instance.clock import now_ms
from cross_instance.config import RedisConfig
from cross_instance.envelope import (
    DeadLetter,
    Envelope,
    RuntimeDraining,
    RuntimeReply,
    Trail,
    new_message_id,
)
from cross_instance.keys import CONSUMER_GROUP, RuntimeKeys
from cross_instance.redis_client import AnyRedis
from tests.runtime.conftest import Recorder
from tests.waiting import until

pytestmark = pytest.mark.anyio

# Where the runtime read `now_ms` when it was one module (runtime.py), it reads it here now.
RUNTIME_MODULES_READING_THE_CLOCK = (dead_letters, inbox, ownership, routing)


def _envelope(target: str, payload: str = "x") -> Envelope:
    return Envelope(message_id=new_message_id(), kind="frame", target_kind="node",
                    target_id=target, payload=payload, created_ms=now_ms())  # fmt: skip


async def _dead(redis: AnyRedis, runtime: Any) -> list[DeadLetter]:
    entries = await redis.xrange(runtime.keys.dlq())
    return [msgspec.json.decode(fields["dead"], type=DeadLetter) for _, fields in entries]


async def _gone(redis: AnyRedis, key: str) -> bool:
    return not await redis.exists(key)


class Gated(Recorder):
    """Every call waits for ``gate``; ``entered`` tells the test a call is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.entered = anyio.Event()

    async def __call__(self, envelope: Envelope) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().__call__(envelope)


class Slow(Recorder):
    def __init__(self, seconds: float = 0.3) -> None:
        super().__init__()
        self.seconds = seconds

    async def __call__(self, envelope: Envelope) -> None:
        await anyio.sleep(self.seconds)
        await super().__call__(envelope)


class HangsOnce(Recorder):
    """Payload "hang" blocks forever on its first attempt, then succeeds."""

    async def __call__(self, envelope: Envelope) -> None:
        if envelope.payload == "hang" and envelope.message_id not in self.attempts:
            self.attempts[envelope.message_id] = 1
            await anyio.sleep_forever()
        await super().__call__(envelope)


async def test_a_drain_that_cannot_hand_over_leaves_its_inbox_for_a_peer(
    start_runtime: Any, redis: AnyRedis
) -> None:
    failing = Recorder(fail_kinds={"frame"})
    async with start_runtime("b") as (b, rec_b):
        async with start_runtime("a", recorder=failing, reclaim_min_idle_ms=60000) as (a, _):
            await a.claim_node("n1")
            sent = await b.send_to_node("n1", "frame", "x")
            await until(lambda: failing.attempts.get(sent.message_id) == 1)  # pending at a
            # A rival's lease runs on a's inbox: a's own hand-over is refused.
            lease = {"holder": "rival@1", "until_ms": now_ms() + 60000}
            await redis.hset(a.keys.rt("takeovers"), a.token, json.dumps(lease))
            await a.drain()
            # a did not withdraw its inbox (that would orphan the entry): a peer takes it over
            # once a's presence expires.
            assert await redis.hexists(a.keys.rt("inboxes"), a.token)
            assert await redis.xlen(a.inbox) == 1
            await b.claim_node("n1")
            await redis.hdel(a.keys.rt("takeovers"), a.token)  # the rival is gone
            await until(lambda: rec_b.ids() == [sent.message_id])
            # b's takeover ends after the inbox is retired: it releases a's ownership, then
            # end_takeover forgets a's presence; wait for that, not for the inbox alone.
            await until(lambda: b.metrics.takeovers._value.get() == 1)
            assert not await redis.exists(a.inbox)
            assert not await redis.hexists(a.keys.rt("presence"), "a")


async def test_takeovers_go_on_after_a_lost_lease_race_and_deliver_once(
    start_runtime: Any, peers: Any, redis: AnyRedis
) -> None:
    dead = peers("d", [])
    dead.stop()  # kill -9
    rec = Gated()
    async with start_runtime("c", recorder=rec) as (c, _):
        await c.claim_node("n1")
        code, _ = await c.inbox_stream.append(
            dead.token, _envelope("n1"), Trail(deliveries=0, failure=None)
        )
        assert code is RuntimeReply.OK
        await rec.entered.wait()  # c took d's inbox over and hands the entry to its own handler
        # Meanwhile another holder fenced the inbox: c's ack of this page is refused.
        await redis.hset(c.keys.inbox(dead.token, "meta"), "fenced_by", "rival@1")
        rec.gate.set()
        # c's takeover loop lives on: once its lease (3 s) has lapsed the inbox is listed as
        # dead again, c takes it again, finds the entry handled already (the done mark of its
        # in-process delivery) and retires the inbox.
        # The takeover is counted once it returns (after end_takeover), not when the inbox goes.
        await until(lambda: c.metrics.takeovers._value.get() == 1)
        assert not await redis.exists(c.keys.inbox(dead.token))
        assert len(rec.delivered) == 1
        assert c.metrics.duplicates._value.get() == 1


async def test_entries_waiting_behind_a_slow_handler_are_not_reclaimed(
    start_runtime: Any, redis: AnyRedis
) -> None:
    # Each call takes 300 ms; entries are reclaimable after 100 ms idle.
    async with start_runtime("b", recorder=Slow(), reclaim_min_idle_ms=100) as (b, rec):
        await b.claim_node("n1")
        envelopes = [_envelope("n1") for _ in range(3)]
        async with redis.pipeline(transaction=True) as pipe:  # one batch for the reader
            for env in envelopes:
                pipe.xadd(b.inbox, {"env": msgspec.json.encode(env).decode()})
            await pipe.execute()
        await until(lambda: len(rec.delivered) == 3)
        assert [rec.attempts[env.message_id] for env in envelopes] == [1, 1, 1]
        assert b.metrics.reclaimed._value.get() == 0
        await until(lambda: _zero(redis, b.inbox))


async def _zero(redis: AnyRedis, key: str) -> bool:
    return await redis.xlen(key) == 0


async def test_a_hung_handler_times_out_and_the_inbox_keeps_flowing(
    start_runtime: Any,
) -> None:
    async with (
        start_runtime("b", recorder=HangsOnce(), handler_timeout_ms=200) as (b, rec),
        start_runtime("a") as (a, _),
    ):
        await b.claim_node("n1")
        stuck = await a.send_to_node("n1", "frame", "hang")
        after = await a.send_to_node("n1", "frame", "next")
        await until(lambda: set(rec.ids()) == {stuck.message_id, after.message_id})
        assert rec.ids().count(stuck.message_id) == 1
        assert rec.attempts[stuck.message_id] == 2  # the timed-out attempt, then reclaim's
        assert b.metrics.reclaimed._value.get() == 1


async def test_the_reader_survives_redis_errors_on_its_connection(
    start_runtime: Any, redis: AnyRedis
) -> None:
    async with start_runtime("b") as (b, rec), start_runtime("a") as (a, _):
        await b.claim_node("n1")
        # The inbox key briefly holds the wrong type: every read fails with WRONGTYPE.
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(b.inbox)
            pipe.set(b.inbox, "not a stream")
            await pipe.execute()
        await until(lambda: b.metrics.inbox_read_failures._value.get() >= 2)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(b.inbox)
            pipe.xgroup_create(b.inbox, CONSUMER_GROUP, id="0", mkstream=True)
            await pipe.execute()
        sent = await a.send_to_node("n1", "frame", "x")
        await until(lambda: rec.ids() == [sent.message_id])
        assert not b.fenced


async def test_a_full_inbox_refuses_and_dead_letters_instead_of_trimming(
    start_runtime: Any, redis: AnyRedis, redis_config: RedisConfig
) -> None:
    failing = Recorder(fail_kinds={"frame"})  # entries stay pending: the inbox fills up
    async with (
        start_runtime("b", recorder=failing, inbox_maxlen=100, reclaim_min_idle_ms=60000) as (
            b,
            _,
        ),
        start_runtime("a", inbox_maxlen=100) as (a, _),  # the sender applies the bound
    ):
        await b.claim_node("n1")
        sent = [await a.send_to_node("n1", "frame", str(i)) for i in range(100)]
        assert {s.route for s in sent} == {"remote"}
        over = await a.send_to_node("n1", "frame", "one too many")
        assert over.route == "dead_letter"
        [dead] = await _dead(redis, a)
        assert (dead.reason, dead.envelope.message_id, dead.owner) == (
            "inbox_full",
            over.message_id,
            b.token,
        )
        assert a.metrics.dead_lettered.labels("inbox_full")._value.get() == 1
        # nothing already queued was trimmed away
        assert [entry_id for entry_id, _ in await redis.xrange(b.inbox)] == [
            s.entry_id for s in sent
        ]
        # a replay into the full inbox is refused too, and the dead letter stays
        report = await admin.dlq_replay(redis, a.config, redis_config.key_prefix, all_entries=True)
        assert report["skipped"] == [{"id": over.entry_id, "reason": "inbox_full"}]
        assert await redis.xlen(a.keys.dlq()) == 1


async def test_a_draining_replica_claims_nothing_new(start_runtime: Any, redis: AnyRedis) -> None:
    async with start_runtime("a") as (a, _):
        await a.drain()
        with pytest.raises(RuntimeDraining):
            await a.claim_node("n1")
        with pytest.raises(RuntimeDraining):
            await a.claim_session("s1")
        assert not await redis.hexists(a.keys.owners("node"), "n1")


async def test_a_drain_with_many_ownerless_entries_ends_within_its_grace(
    start_runtime: Any, redis: AnyRedis
) -> None:
    # Ten entries for nodes nobody owns, in pages of two: holding each page for the full
    # route grace (800 ms) would take 4 s, past the 2.5 s drain grace.
    failing = Recorder(fail_kinds={"frame"})
    settings = {
        "inbox_batch": 2,
        "route_grace_ms": 800,
        "drain_grace_ms": 2500,
        "reclaim_min_idle_ms": 60000,
    }
    async with start_runtime("a", recorder=failing, **settings) as (a, _):
        envelopes = [_envelope(f"gone-{i}") for i in range(10)]
        for env in envelopes:
            await a.inbox_stream.append(a.token, env, Trail(deliveries=0, failure=None))
        await until(lambda: all(failing.attempts.get(e.message_id) == 1 for e in envelopes))
    # The drain on leaving finished its hand-over: presence withdrawn, inbox retired, and
    # every entry dead-lettered once, as no_owner.
    assert not await redis.hexists(a.keys.rt("presence"), "a")
    assert not await redis.exists(a.inbox)
    dead = await _dead(redis, a)
    assert sorted(d.envelope.message_id for d in dead) == sorted(e.message_id for e in envelopes)
    assert {d.reason for d in dead} == {"no_owner"}


# -- races a review found: each test drives the interleaving it names ------------------------


async def test_a_send_held_while_draining_is_dead_lettered_not_lost(
    start_runtime: Any, redis: AnyRedis
) -> None:
    async with start_runtime("a", route_grace_ms=2000) as (a, _):
        early = await a.send_to_node("gone-1", "frame", "early")
        # Not a wait for an event: early's grace (2 s) must end well before the drain's hold
        # budget (2 s from the drain's start), so a drain that waited for early alone would
        # return while the late message is still held.
        await anyio.sleep(1.0)
        late: list[Any] = []

        async def send_during_drain() -> None:
            await until(lambda: _gone(redis, a.inbox))  # the hand-over is over
            late.append(await a.send_to_node("gone-2", "frame", "late"))  # e.g. the sweeper

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_during_drain)
            await a.drain()
        assert early.route == late[0].route == "held"  # promised: delivered or dead-lettered
        # settled by the drain itself, not by the clean-up on leaving
        dead = {d.envelope.message_id for d in await _dead(redis, a)}
        assert dead == {early.message_id, late[0].message_id}


async def _put(redis: AnyRedis, keys: RuntimeKeys, token: str, envelope: Envelope) -> None:
    await redis.xadd(keys.inbox(token), {"env": msgspec.json.encode(envelope).decode()})


async def test_copies_of_one_message_in_a_taken_over_inbox_are_handled_once(
    start_runtime: Any, peers: Any, redis: AnyRedis, redis_config: RedisConfig
) -> None:
    keys = RuntimeKeys(redis_config.key_prefix)
    dead = peers("d", [])
    dead.stop()  # kill -9
    env = _envelope("n1")
    for _ in range(2):  # an earlier holder re-routed it, crashed before its ack, and so on
        await _put(redis, keys, dead.token, env)
    rec = Slow()  # a takeover page delivers its entries at once: both copies race
    async with start_runtime("c", recorder=rec) as (c, _):
        await c.claim_node("n1")
        await until(lambda: _gone(redis, keys.inbox(dead.token)))
        await until(lambda: _zero(redis, c.inbox))
        assert not c.holds.held
        assert rec.ids() == [env.message_id]


async def test_a_takeover_whose_lease_runs_out_mid_page_hands_over_without_doubles(
    start_runtime: Any, peers: Any, redis: AnyRedis, redis_config: RedisConfig
) -> None:
    # A page of four entries waits for its holds, then for a 1.5 s handler: longer than the
    # 1 s lease, which must be renewed while the page runs.
    settings = {"takeover_lock_ttl_ms": 1000, "route_grace_ms": 800, "handler_timeout_ms": 2500}
    keys = RuntimeKeys(redis_config.key_prefix)
    dead = peers("d", ["n1"], **settings)
    dead.stop()  # kill -9: n1 still names d
    envelopes = [_envelope("n1") for _ in range(4)]
    for env in envelopes:
        await _put(redis, keys, dead.token, env)
    rec_c = Slow(seconds=1.5)
    async with start_runtime("c", recorder=rec_c, **settings) as (c, _):
        await until(lambda: len(c.holds.held) == 4)  # c holds the page: n1's owner d is dead
        async with start_runtime("e", **settings) as (e, rec_e):
            await c.claim_node("n1")  # the node reconnects to c
            want = sorted(env.message_id for env in envelopes)
            await until(lambda: sorted(set(rec_c.ids() + rec_e.ids())) == want)
            # counted when take_over returns (after end_takeover), not when the inbox goes
            await until(
                lambda: c.metrics.takeovers._value.get() + e.metrics.takeovers._value.get() >= 1
            )
            assert not await redis.exists(keys.inbox(dead.token))
            await until(lambda: _zero(redis, c.inbox))
            await until(lambda: _zero(redis, e.inbox))
            assert not c.holds.held and not e.holds.held
            assert sorted(rec_c.ids() + rec_e.ids()) == want
            # c renewed its lease while the page ran: e never took the inbox from under it
            assert c.metrics.takeovers._value.get() == 1
            assert e.metrics.takeovers._value.get() == 0


async def test_a_slow_delivery_of_one_held_message_does_not_delay_the_others(
    start_runtime: Any, redis: AnyRedis
) -> None:
    rec = Slow(seconds=2.0)
    async with start_runtime("a", recorder=rec, handler_timeout_ms=3000) as (a, _):
        mine = await a.send_to_node("n1", "frame", "x")  # n1 has no owner yet: held
        other = await a.send_to_node("gone", "frame", "y")  # never gets one: 800 ms grace
        assert (mine.route, other.route) == ("held", "held")
        await a.claim_node("n1")  # the hold loop now hands mine to the 2 s handler
        await until(lambda: a.metrics.dead_lettered.labels("no_owner")._value.get() == 1)
        assert rec.delivered == []  # other's grace ended while mine was still in the handler
        assert [d.envelope.message_id for d in await _dead(redis, a)] == [other.message_id]
        await until(lambda: rec.ids() == [mine.message_id])


class SlowToTell(Recorder):
    """Telling the gateway an id was lost takes 150 ms (closing a socket, flushing...)."""

    async def on_lost(self, kind: str, ident: str) -> None:
        await anyio.sleep(0.15)
        self.lost.append((kind, ident))


async def test_a_fenced_replica_tells_every_lost_id_and_drains(
    start_runtime: Any, redis: AnyRedis
) -> None:
    rec = SlowToTell()
    async with start_runtime("a", recorder=rec) as (a, _):
        for i in range(4):
            await a.claim_node(f"n{i}")
        # Another replica took a's inbox over: a's next presence refresh is refused.
        await redis.hset(a.keys.rt("inboxes"), a.token, "takeover:rival@1")
        await until(lambda: a.fenced)
        await until(lambda: len(rec.lost) == 4)
        await until(lambda: a.draining)


async def test_a_claim_in_flight_when_the_drain_starts_is_given_back(
    start_runtime: Any, redis: AnyRedis
) -> None:
    async with start_runtime("a") as (a, _):
        real = a.scripts.run
        claim_sent = anyio.Event()
        released = anyio.Event()

        async def script(name: str, args: Any, **kw: Any) -> Any:
            if name == "claim_owner":
                claim_sent.set()  # past the claim's own `draining` check
                await until(lambda: a.lifecycle.stopping)  # the drain released what it owned
            result = await real(name, args, **kw)
            if name == "release_owner" and args[4:] == ["n9"]:
                released.set()
            return result

        a.scripts.run = script  # type: ignore[method-assign]
        outcome: list[BaseException] = []

        async def claim() -> None:
            try:
                await a.claim_node("n9")
            except RuntimeDraining as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim)
            await claim_sent.wait()
            await a.drain()
        assert released.is_set() and len(outcome) == 1
        assert a.ownership.owned == set()
    assert await redis.hget(a.keys.owners("node"), "n9") is None


async def test_a_replica_whose_clock_runs_ahead_does_not_take_a_live_holders_claim(
    start_runtime: Any, redis: AnyRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec_a = Gated()
    async with start_runtime("a", recorder=rec_a) as (a, _), start_runtime("c") as (c, rec_c):
        env = _envelope("n1")
        await _put(redis, a.keys, a.token, env)
        await rec_a.entered.wait()  # a holds the claim and its handler runs; a is live
        # c's clock runs 1 s ahead of the Redis server, whose TIME writes presence scores
        # (the presence TTL here is 600 ms).
        real = now_ms
        for module in RUNTIME_MODULES_READING_THE_CLOCK:
            monkeypatch.setattr(module, "now_ms", lambda: real() + 1000)
        await _put(redis, c.keys, c.token, env)  # a second copy (re-route, replay) reaches c

        async def c_looked() -> bool:  # c read its copy and is done with it for now
            pending = await redis.xpending(c.inbox, CONSUMER_GROUP)
            return bool(rec_c.ids()) or (pending["pending"] == 1 and not c.consumer.inflight)

        await until(c_looked)
        rec_a.gate.set()
        await until(lambda: rec_a.ids() == [env.message_id])
        await until(lambda: _zero(redis, c.inbox))  # c looked at its copy: busy, then done
        assert rec_c.ids() == []
        assert c.metrics.duplicates._value.get() == 1


async def test_a_copy_arriving_while_the_done_mark_is_written_is_not_run_again(
    start_runtime: Any, peers: Any, redis: AnyRedis, redis_config: RedisConfig
) -> None:
    keys = RuntimeKeys(redis_config.key_prefix)
    dead = peers("d", [])
    dead.stop()  # kill -9
    env = _envelope("n1")
    await _put(redis, keys, dead.token, env)
    async with start_runtime("c") as (c, rec):
        assert c.redis is not None
        real_set = c.redis.set
        marking = anyio.Event()
        proceed = anyio.Event()

        async def slow_mark(name: str, value: Any, *args: Any, **kw: Any) -> Any:
            if name == keys.dedup(env.message_id) and not kw.get("nx") and not marking.is_set():
                marking.set()  # the done mark's round trip is slow (a new connection...)
                await proceed.wait()
            return await real_set(name, value, *args, **kw)

        c.redis.set = slow_mark  # type: ignore[method-assign]
        await c.claim_node("n1")
        await marking.wait()  # the takeover handled M in process; its done mark is on its way
        await _put(redis, keys, c.token, env)  # a second copy of M reaches c's own inbox
        await until(lambda: c.metrics.reclaimed._value.get() >= 1)  # ... and was looked at
        proceed.set()
        await until(lambda: _gone(redis, keys.inbox(dead.token)))
        await until(lambda: _zero(redis, c.inbox))
        assert rec.ids() == [env.message_id]


async def test_a_busy_copy_is_not_dead_lettered_while_its_twin_is_handled(
    start_runtime: Any, peers: Any, redis: AnyRedis, redis_config: RedisConfig
) -> None:
    keys = RuntimeKeys(redis_config.key_prefix)
    settings = {"reclaim_min_idle_ms": 150, "max_deliveries": 3, "handler_timeout_ms": 3000}
    dead = peers("d", [])
    dead.stop()  # kill -9
    env = _envelope("n1")
    await _put(redis, keys, dead.token, env)
    rec = Slow(seconds=1.5)  # long enough for the twin to be reclaimed past max_deliveries
    async with start_runtime("c", recorder=rec, **settings) as (c, _):
        await c.claim_node("n1")
        await until(lambda: bool(c.claims.mine))  # the takeover's copy is in the handler
        await _put(redis, keys, c.token, env)  # the twin: busy, reclaimed, busy...
        await until(lambda: rec.ids() == [env.message_id])
        await until(lambda: _zero(redis, c.inbox))
        assert await _dead(redis, c) == []
        assert rec.ids() == [env.message_id]


async def test_a_takeover_into_a_full_inbox_dead_letters_instead_of_trimming(
    start_runtime: Any, peers: Any, redis: AnyRedis, redis_config: RedisConfig
) -> None:
    keys = RuntimeKeys(redis_config.key_prefix)
    # d's presence outlives the set-up below by far: it is taken over only once c is full.
    dead = peers("d", [], presence_ttl_ms=3000, presence_refresh_ms=1000)
    env = _envelope("n1")
    await _put(redis, keys, dead.token, env)
    dead.stop()  # kill -9
    failing = Recorder(fail_kinds={"frame"})  # c's handler refuses: nothing leaves its inbox
    settings = {"inbox_maxlen": 100, "reclaim_min_idle_ms": 60000}
    async with start_runtime("c", recorder=failing, **settings) as (c, _):
        await c.claim_node("n1")
        async with redis.pipeline(transaction=True) as pipe:
            for _ in range(100):
                pipe.xadd(c.inbox, {"env": msgspec.json.encode(_envelope("n1")).decode()})
            await pipe.execute()
        # The takeover hands env to c's handler, which fails; the retry it queues would be the
        # 101st entry of c's inbox: dead-lettered instead, nothing already there trimmed.
        await until(lambda: c.metrics.takeovers._value.get() == 1)
        [dead_letter] = await _dead(redis, c)
        assert (dead_letter.reason, dead_letter.envelope.message_id) == (
            "inbox_full",
            env.message_id,
        )
        assert await redis.xlen(c.inbox) == 100


async def test_replicas_keep_working_after_redis_drops_their_connections(
    start_runtime: Any, redis: AnyRedis
) -> None:
    async with start_runtime("b") as (b, rec), start_runtime("a") as (a, _):
        await b.claim_node("n1")
        first = await a.send_to_node("n1", "frame", "x")
        await until(lambda: rec.ids() == [first.message_id])
        # Every other client connection goes: the blocked reads, presence, the pools. The
        # clients' retries (redis.retry_attempts) reconnect; nothing is fenced or stuck.
        killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert int(killed) >= 4
        second = await a.send_to_node("n1", "frame", "y")
        await until(lambda: rec.ids() == [first.message_id, second.message_id])
        assert not a.fenced and not b.fenced


async def test_a_held_message_whose_handler_hangs_times_out_and_is_retried(
    start_runtime: Any,
) -> None:
    rec = HangsOnce()
    async with start_runtime("a", recorder=rec, handler_timeout_ms=200) as (a, _):
        held = await a.send_to_node("n1", "frame", "hang")  # n1 has no owner yet
        assert held.route == "held"
        await a.claim_node("n1")  # the hold's re-check hands it to the handler, which hangs
        await until(lambda: rec.ids() == [held.message_id])  # timed out, queued, retried
        assert rec.attempts[held.message_id] == 2
        assert not a.holds.held
