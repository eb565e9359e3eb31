"""Scheduling-core fixtures: one ``core`` per test, over standalone Redis and over the Cluster.

Every test that takes ``core`` runs twice: against the shared standalone server and against the
local 3-master Redis Cluster (marked ``cluster``). Each test gets its own key prefix, so its
domain's keys are its own; they are deleted afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import RedisCluster

from cross_instance.config import RedisConfig
from cross_instance.redis_client import AnyRedis, connect
from scheduler.config import SchedulingConfig
from scheduler.scheduling import DispatchRequest, NodeCapabilities, SchedulingCore

T0 = 1_000_000  # test clock origin (ms); scripts take now_ms, so time is ours to move


@pytest.fixture(params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)])
def client_factory(request: pytest.FixtureRequest, redis_url: str) -> Callable[[], AnyRedis]:
    if request.param == "standalone":
        return lambda: connect(RedisConfig(url=redis_url))
    cluster = request.getfixturevalue("redis_cluster")
    return lambda: connect(RedisConfig(url=cluster.url, mode="cluster"))


@pytest.fixture
def sched_config() -> SchedulingConfig:
    return SchedulingConfig()


@pytest.fixture
async def core(
    client_factory: Callable[[], AnyRedis], key_prefix: str, sched_config: SchedulingConfig
) -> AsyncIterator[SchedulingCore]:
    client = client_factory()
    if isinstance(client, RedisCluster):
        await client.initialize()
    core = SchedulingCore(client, sched_config, key_prefix=key_prefix)
    try:
        yield core
    finally:
        await client.delete(*core.keys.all())
        await client.aclose()


def caps(
    asr: tuple[str, ...] = ("en",), semantic: tuple[str, ...] = ("zh",), slots: int = 2
) -> NodeCapabilities:
    return NodeCapabilities(asr=list(asr), semantic=list(semantic), max_concurrent_jobs=slots)


def req(
    session: str = "s1",
    index: int = 0,
    *,
    src: str = "en",
    tgt: str = "zh",
    turn: str = "t1",
    reason: str = "manual",
    exclude: tuple[str, ...] = (),
    payload: str = '{"type":"job_assign"}',
) -> DispatchRequest:
    return DispatchRequest(
        session_id=session,
        utterance_index=index,
        src_lang=src,
        tgt_lang=tgt,
        turn_id=turn,
        reason=reason,  # type: ignore[arg-type]
        payload=payload,
        exclude=list(exclude),
    )
