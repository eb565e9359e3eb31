"""Property test: random interleavings from several concurrent clients keep the invariants.

Each example is a list of steps; a step is 1..3 operations (register, heartbeat with or without
a language change, dispatch, complete — sometimes stale or foreign —, offline with the current
or a stale generation, sweep after moving the clock) run concurrently on different clients. After
every step the state in Redis is checked:

- each node's running count equals its active jobs and stays within 0..max;
- a job is on at most one node, and every active job is indexed on the node it names;
- no node holds two active jobs with the same (session, utterance_index);
- a node in the pools (node_slots entry = its max) has exactly one pool member per pair of its
  languages; a node out of them (lapsed) only leftovers of its own pairs; no member of an
  unknown node; node_free holds exactly the nodes in the pools with a free slot;
- the waiting indexes hold exactly the jobs in state "waiting" (no slot, no node), each once,
  in one ticket order.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

import anyio
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis, connect
from scheduler.config import SchedulingConfig
from scheduler.scheduling import NodeCapabilities, SchedulingCore, SchedulingError
from tests.scheduling.conftest import T0, req

NODES = ["n0", "n1", "n2", "n3"]
LANG_SETS = [("en",), ("zh",), ("en", "zh"), ("en", "zh", "ja")]
SLOTS = 1  # small, so pairs fill up and jobs wait for slots
CLIENTS = 3
ACTIVE = {"dispatched", "acked", "running"}

op = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(NODES), st.sampled_from(LANG_SETS)),
    st.tuples(st.just("heartbeat"), st.sampled_from(NODES), st.none() | st.sampled_from(LANG_SETS)),
    st.tuples(
        st.just("dispatch"),
        st.integers(0, 2),  # session
        st.integers(0, 3),  # utterance index
        st.sampled_from(["en", "zh", "ja"]),  # tgt
        st.sampled_from(["manual", "max_duration", "size"]),
    ),
    st.tuples(st.just("complete"), st.integers(0, 50), st.sampled_from(["ok", "stale", "foreign"])),
    st.tuples(st.just("offline"), st.sampled_from(NODES), st.booleans()),  # True: stale gen
    st.tuples(st.just("sweep"), st.sampled_from([0, 10_000, 30_000, 50_000])),
)
steps = st.lists(st.lists(op, min_size=1, max_size=CLIENTS), min_size=1, max_size=25)


class World:
    """What the test driver remembers between steps (not the scheduler's state)."""

    def __init__(self) -> None:
        self.now = T0
        self.generations: dict[str, int] = {}
        self.jobs: list[tuple[str, str, int]] = []  # (job_id, node, attempt) as last seen


async def run_op(core: SchedulingCore, world: World, operation: tuple[Any, ...]) -> None:
    kind = operation[0]
    now = world.now
    try:
        if kind == "register":
            _, node, langs = operation
            caps = NodeCapabilities(asr=["en"], semantic=list(langs), max_concurrent_jobs=SLOTS)
            reg = await core.register_node(node, caps, now_ms=now)
            world.generations[node] = reg.generation
        elif kind == "heartbeat":
            _, node, langs = operation
            caps = None
            if langs is not None:
                caps = NodeCapabilities(asr=["en"], semantic=list(langs), max_concurrent_jobs=SLOTS)
            await core.heartbeat(node, world.generations.get(node, 0), caps=caps, now_ms=now)
        elif kind == "dispatch":
            _, session, index, tgt, reason = operation
            request = req(f"s{session}", index, tgt=tgt, reason=reason, turn=f"t{session}")
            job = await core.dispatch(request, now_ms=now)
            if job.node_id:
                world.jobs.append((job.job_id, job.node_id, job.attempt))
            for placed in job.placed:
                world.jobs.append((placed.job_id, placed.new_node or "", placed.attempt))
        elif kind == "complete":
            _, pick, how = operation
            if not world.jobs:
                return
            job_id, node, attempt = world.jobs[pick % len(world.jobs)]
            if how == "stale":
                attempt -= 1
            elif how == "foreign":
                node = "n-foreign"
            done = await core.complete(job_id, node, attempt, ok=True, now_ms=now)
            if done.handed is not None:
                handed = done.handed
                world.jobs.append((handed.job_id, handed.new_node or "", handed.attempt))
        elif kind == "offline":
            _, node, stale = operation
            gen = world.generations.get(node, 0) - (1 if stale else 0)
            for action in (await core.node_offline(node, gen, now_ms=now)).actions:
                if action.new_node:
                    world.jobs.append((action.job_id, action.new_node, action.attempt))
        elif kind == "sweep":
            world.now += operation[1]
            for action in (await core.sweep(now_ms=world.now)).actions:
                if action.new_node:
                    world.jobs.append((action.job_id, action.new_node, action.attempt))
    except SchedulingError:
        pass  # refusals are part of the game: they must change nothing (checked below)


async def check_invariants(client: AnyRedis, core: SchedulingCore) -> None:
    k = core.keys.key
    nodes = {n: msgspec.json.decode(v) for n, v in (await client.hgetall(k("nodes"))).items()}
    running = {n: int(v) for n, v in (await client.hgetall(k("node_running"))).items()}
    jobs = {j: msgspec.json.decode(v) for j, v in (await client.hgetall(k("jobs"))).items()}
    node_jobs = [m.split("\0") for m in await client.zrange(k("node_jobs"), 0, -1)]
    langs = {n: msgspec.json.decode(v) for n, v in (await client.hgetall(k("node_langs"))).items()}
    slots = {n: int(v) for n, v in (await client.hgetall(k("node_slots"))).items()}
    pools = set(await client.zrange(k("pools"), 0, -1))
    free = set(await client.smembers(k("node_free")))

    assert set(langs) == set(nodes) and set(slots) <= set(nodes)
    # a gone node keeps a running count only while jobs are held for its return, and is never
    # in node_free (it has no node_slots)
    assert free <= set(slots), "node_free holds a node out of the pools"
    per_node = Counter(node for node, _ in node_jobs)
    for node, count in running.items():
        if node not in nodes:  # gone, with jobs held for its return
            assert count == per_node[node] > 0, ("running count of a gone node", node, count)
    for node, rec in nodes.items():
        count = running.get(node, 0)
        assert 0 <= count <= rec["max"], (node, count)
        assert count == per_node[node], (node, count, per_node[node])
        lang = langs[node]
        own = {f"{a}:{b}\0{node}" for a in lang.get("asr", []) for b in lang.get("semantic", [])}
        members = {m for m in pools if m.endswith(f"\0{node}")}
        if node in slots:
            assert slots[node] == rec["max"], node
            assert members == own, node
        else:
            assert members <= own, node
    assert all(m.rsplit("\0", 1)[1] in nodes for m in pools), "pool member of an unknown node"
    assert free == {n for n, max_slots in slots.items() if running.get(n, 0) < max_slots}

    holders = Counter(job_id for _, job_id in node_jobs)
    assert all(n == 1 for n in holders.values()), "a job on two nodes"
    utterances = Counter()
    for node, job_id in node_jobs:
        job = jobs[job_id]
        assert job["state"] in ACTIVE and job["node"] == node
        utterances[(node, job["session"], job["index"])] += 1
    assert all(n == 1 for n in utterances.values()), "two jobs of one utterance on a node"
    for job_id, job in jobs.items():
        if job["state"] in ACTIVE:
            assert holders[job_id] == 1, f"active job {job_id} not indexed on its node"

    waiting = [m.split("\0") for m in await client.zrange(k("waiting"), 0, -1)]
    order = await client.zrange(k("waiting_order"), 0, -1, withscores=True)
    in_state = {j for j, job in jobs.items() if job["state"] == "waiting"}
    assert {job_id for _, _, job_id in waiting} == in_state == {j for j, _ in order}
    assert len(waiting) == len(order) == len(in_state), "a job waits twice"
    tickets = {j: int(score) for j, score in order}
    for pair, ticket, job_id in waiting:
        job = jobs[job_id]
        assert (job["pair"], job["ticket"], tickets[job_id]) == (pair, int(ticket), int(ticket))
        assert job["node"] == "" and holders[job_id] == 0


async def run_example(url: str, plan: list[list[tuple[Any, ...]]]) -> None:
    prefix = f"p{secrets.token_hex(5)}"
    clients = [connect(RedisConfig(url=url)) for _ in range(CLIENTS)]
    cores = [SchedulingCore(c, SchedulingConfig(), key_prefix=prefix) for c in clients]
    world = World()
    try:
        for step in plan:
            async with anyio.create_task_group() as tg:
                for i, operation in enumerate(step):
                    tg.start_soon(run_op, cores[i], world, operation)
            await check_invariants(clients[0], cores[0])
    finally:
        await clients[0].delete(*cores[0].keys.all())
        for c in clients:
            await c.aclose()


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
def test_invariants_hold_under_random_interleavings(redis_url: str, plan: list[Any]) -> None:
    anyio.run(run_example, redis_url, plan, backend_options={"use_uvloop": True})
