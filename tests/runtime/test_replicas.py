"""Several replicas in separate processes (tests/runtime/peer.py) plus one in the test process:
delivery between them, takeover after ``kill -9`` (nothing lost, nothing twice), drain handoff."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from typing import Any

import anyio
import msgspec
import pytest

from cross_instance.envelope import DeadLetter
from cross_instance.keys import CONSUMER_GROUP
from cross_instance.redis_client import AnyRedis
from tests.waiting import until

pytestmark = pytest.mark.anyio


async def peer_deliveries(redis: AnyRedis, prefix: str) -> list[dict[str, str]]:
    return [json.loads(raw) for raw in await redis.lrange(f"{prefix}:test:deliveries", 0, -1)]


async def dead_letters(redis: AnyRedis, runtime: Any) -> list[DeadLetter]:
    entries = await redis.xrange(runtime.keys.dlq())
    return [msgspec.json.decode(fields["dead"], type=DeadLetter) for _, fields in entries]


async def test_delivery_between_processes(
    start_runtime: Any, peers: Any, redis: AnyRedis, key_prefix: str
) -> None:
    b = peers("b", ["n1"])
    async with start_runtime("a") as (a, rec_a):
        sent = [await a.send_to_node("n1", "frame", f"m{i}") for i in range(5)]
        assert {s.route for s in sent} == {"remote"} and {s.owner for s in sent} == {b.token}
        await until(lambda: _count(redis, key_prefix, 5))
        got = await peer_deliveries(redis, key_prefix)
        assert sorted(d["message_id"] for d in got) == sorted(s.message_id for s in sent)
        assert {d["instance"] for d in got} == {"b"}
        assert rec_a.delivered == []


async def _count(redis: AnyRedis, prefix: str, n: int) -> bool:
    return await redis.llen(f"{prefix}:test:deliveries") >= n


async def test_takeover_after_kill_loses_nothing_and_delivers_once(
    start_runtime: Any, peers: Any, redis: AnyRedis, key_prefix: str
) -> None:
    b = peers("b", ["n1", "n2", "n3"])
    async with start_runtime("a") as (a, rec_a):
        # b's handler hangs on the first message: it stays pending, the rest stay unread
        inbox = a.keys.inbox(b.token)

        async def pending(n: int) -> bool:
            return (await redis.xpending(inbox, CONSUMER_GROUP))["pending"] == n

        sent = {"n1": [await a.send_to_node("n1", "frame", "hang")]}
        # Only once b holds "hang" is it certain not to read the rest (one XREADGROUP batch
        # would take all that is there by then).
        await until(lambda: pending(1))
        sent["n1"] += [await a.send_to_node("n1", "frame", f"p{i}") for i in range(2)]
        sent["n2"] = [await a.send_to_node("n2", "frame", f"q{i}") for i in range(2)]
        sent["n3"] = [await a.send_to_node("n3", "frame", "r0")]

        async def b_is_stuck() -> bool:
            return await pending(1) and await redis.xlen(inbox) == 6

        await until(b_is_stuck)
        # Starting a peer blocks until it prints READY: off the event loop, or a's presence
        # (TTL 600 ms) lapses meanwhile and a is fenced.
        c = await anyio.to_thread.run_sync(peers, "c", ["n2"])  # n2 reconnects to c
        b.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        b.proc.wait()  # type: ignore[union-attr]
        await a.claim_node("n1")  # n1 reconnects to a; n3 never comes back
        all_ids = {s.message_id for group in sent.values() for s in group}

        async def settled() -> bool:
            got = await peer_deliveries(redis, key_prefix)
            dead = await dead_letters(redis, a)
            return len(got) + len(rec_a.delivered) + len(dead) >= len(all_ids)

        await until(settled)
        # end_takeover (the taker's last step, after the inbox is retired and b's ownership
        # released) forgets b's presence and inbox registration in one script: wait for it.
        await until(lambda: _unregistered(redis, a.keys.rt("inboxes"), b.token))
        assert not await redis.exists(inbox)
        got = await peer_deliveries(redis, key_prefix)
        dead = await dead_letters(redis, a)
        handled = Counter([d["message_id"] for d in got] + [e.message_id for e in rec_a.delivered])
        assert max(handled.values()) == 1  # none twice
        assert {e.message_id for e in rec_a.delivered} == {s.message_id for s in sent["n1"]}
        assert {d["message_id"] for d in got if d["instance"] == "c"} == {
            s.message_id for s in sent["n2"]
        }
        assert [(d.reason, d.envelope.message_id) for d in dead] == [
            ("no_owner", sent["n3"][0].message_id)
        ]
        assert set(handled) | {d.envelope.message_id for d in dead} == all_ids  # none lost
        assert not any(d["instance"] == "b" for d in got)
        # b is forgotten: no presence, no inbox registration, no ownership left
        assert not await redis.hexists(a.keys.rt("presence"), "b")
        assert b.token not in await redis.hgetall(a.keys.rt("inboxes"))
        assert b.token not in (await redis.hgetall(a.keys.rt("node_owner"))).values()
        assert c.token


async def _unregistered(redis: AnyRedis, inboxes: str, token: str) -> bool:
    return not await redis.hexists(inboxes, token)


async def test_drain_hands_off_within_grace(
    start_runtime: Any, peers: Any, redis: AnyRedis, key_prefix: str
) -> None:
    b = peers("b", ["n1"])
    async with start_runtime("a") as (a, rec_a):
        sent = [await a.send_to_node("n1", "frame", "slow") for _ in range(6)]
        await until(lambda: _count(redis, key_prefix, 1))  # b is busy with the queue
        started = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

        async def released() -> bool:
            return not (await a.ownership.resolve("node", "n1")).live

        await until(released)  # b let n1 go first; the node reconnects to a
        await a.claim_node("n1")
        await anyio.to_thread.run_sync(b.proc.wait)  # type: ignore[union-attr]
        assert b.proc.returncode == 0  # type: ignore[union-attr]
        assert time.monotonic() - started < a.config.drain_grace_ms / 1000
        got = await peer_deliveries(redis, key_prefix)
        handled = Counter([d["message_id"] for d in got] + [e.message_id for e in rec_a.delivered])
        assert set(handled) == {s.message_id for s in sent} and max(handled.values()) == 1
        assert rec_a.delivered  # some were handed over to a
        assert not await redis.exists(a.keys.inbox(b.token))
        assert not await redis.hexists(a.keys.rt("presence"), "b")
        assert await redis.xlen(a.keys.dlq()) == 0
