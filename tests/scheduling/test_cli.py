"""``lingua-scheduler nodes | pools | jobs`` against real Redis, table and --json."""

from __future__ import annotations

import json

import anyio
import pytest

from cross_instance.config import RedisConfig
from cross_instance.redis_client import connect
from scheduler.cli import main
from scheduler.config import SchedulingConfig
from scheduler.scheduling import SchedulingCore
from tests.scheduling.conftest import caps, req


def test_read_commands(
    redis_config: RedisConfig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def seed() -> str:
        client = connect(redis_config)
        core = SchedulingCore(client, SchedulingConfig(), key_prefix=redis_config.key_prefix)
        await core.register_node("node-a", caps(("en",), ("zh", "ja"), 4))
        job = await core.dispatch(req())
        await client.aclose()
        return job.job_id

    job_id = anyio.run(seed)
    monkeypatch.setenv("LINGUA_REDIS_URL", redis_config.url)
    monkeypatch.setenv("LINGUA_REDIS__KEY_PREFIX", redis_config.key_prefix)
    try:
        assert main(["nodes", "--json"]) == 0
        [node] = json.loads(capsys.readouterr().out)
        assert (node["node_id"], node["running"], node["max"]) == ("node-a", 1, 4)
        assert main(["pools", "--pair", "en:zh"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["PAIR", "NODE", "LOAD_PERMILLE"]
        assert out[1].split() == ["en:zh", "node-a", "250"]
        assert main(["jobs", "--active", "--json"]) == 0
        [job] = json.loads(capsys.readouterr().out)
        assert (job["job_id"], job["state"], job["node_id"]) == (job_id, "dispatched", "node-a")
        assert main(["jobs"]) == 0
        assert job_id in capsys.readouterr().out
    finally:

        async def cleanup() -> None:
            client = connect(redis_config)
            core = SchedulingCore(client, SchedulingConfig(), key_prefix=redis_config.key_prefix)
            await client.delete(*core.keys.all())
            await client.aclose()

        anyio.run(cleanup)
