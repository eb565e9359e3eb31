"""``lingua-scheduler ownership | inbox | dlq ... | drain`` against a live Redis and runtimes."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from cross_instance import admin
from cross_instance.envelope import Trail
from cross_instance.redis_client import AnyRedis
from scheduler.cli import main
from tests.runtime.conftest import Recorder
from tests.waiting import until

pytestmark = pytest.mark.anyio


@pytest.fixture
def cli(
    redis_config: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("LINGUA_REDIS_URL", redis_config.url)
    monkeypatch.setenv("LINGUA_REDIS__KEY_PREFIX", redis_config.key_prefix)

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await anyio.to_thread.run_sync(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def test_ownership_inbox_and_dlq_commands(
    start_runtime: Any, cli: Any, redis: AnyRedis
) -> None:
    rec_b = Recorder(fail_kinds={"job_assign"})
    async with start_runtime("a") as (a, rec_a), start_runtime("b", recorder=rec_b) as (b, _):
        await a.claim_node("n1")
        await b.claim_node("n2")
        await b.claim_session("s1")
        poison = await a.send_to_node("n2", "job_assign", "p", trace_id="t-1")
        await until(lambda: b.metrics.dead_lettered.labels("max_deliveries")._value.get() == 1)
        lost = await a.send_to_session("s-gone", "frame", "x")
        await until(lambda: a.metrics.dead_lettered.labels("no_owner")._value.get() == 1)

        code, out, _ = await cli("ownership", "--json")
        view = json.loads(out)
        assert code == 0
        by_id = {r["instance_id"]: r for r in view["replicas"]}
        assert (by_id["a"]["owned_nodes"], by_id["b"]["owned_nodes"]) == (1, 1)
        assert by_id["b"]["owned_sessions"] == 1 and by_id["b"]["live"]
        assert by_id["a"]["token"] == a.token and view["orphans"] == []
        code, out, _ = await cli("ownership", "--full")
        assert code == 0 and "n2" in out and out.splitlines()[0].split()[0] == "INSTANCE"

        overview = await admin.cluster_overview(redis, a.config, a.keys.key_prefix)
        json.dumps(overview)  # JSON-able as /api/v1/cluster serves it
        assert overview["dlq"] == {"depth": 2}
        assert {r["token"] for r in overview["replicas"]} == {a.token, b.token}
        assert {i["token"] for i in overview["inboxes"]} == {a.token, b.token}

        code, out, _ = await cli("inbox", "--json")
        inboxes = {i["token"]: i for i in json.loads(out)}
        assert set(inboxes) == {a.token, b.token}
        assert inboxes[b.token]["pending"] == 0 and inboxes[b.token]["state"] == "live"

        code, out, _ = await cli("dlq", "list", "--json")
        listed = json.loads(out)
        assert [e["reason"] for e in listed] == ["max_deliveries", "no_owner"]
        code, out, _ = await cli("dlq", "list", "--reason", "no_owner", "--json")
        [only] = json.loads(out)
        assert only["message_id"] == lost.message_id
        code, out, _ = await cli("dlq", "list", "--target", "node:n2")
        assert poison.message_id in out and lost.message_id not in out
        code, out, _ = await cli("dlq", "list", "--older-than", "1h", "--json")
        assert json.loads(out) == []

        code, out, _ = await cli("dlq", "show", poison.message_id, "--json")
        shown = json.loads(out)
        assert code == 0 and shown["envelope"]["trace_id"] == "t-1"
        assert shown["deliveries"] == 3 and shown["owner"] == b.token
        assert shown["stream"] == b.inbox and shown["last_error"].startswith("LookupError")
        assert (await cli("dlq", "show", "nope"))[0] == 1

        # replay: dry run changes nothing; the no_owner one is skipped (exit 1)
        code, out, _ = await cli("dlq", "replay", "--all", "--dry-run", "--json")
        report = json.loads(out)
        assert code == 1 and [r["to"] for r in report["replayed"]] == [b.token]
        assert await redis.xlen(a.keys.dlq()) == 2
        rec_b.fail_kinds.clear()
        code, out, _ = await cli("dlq", "replay", poison.message_id, "--yes")
        assert code == 0 and "1 replayed" in out
        await until(lambda: [e.message_id for e in rec_b.delivered] == [poison.message_id])
        code, out, _ = await cli("dlq", "replay", "--to", "a", lost.message_id, "--yes")
        assert code == 0
        await until(lambda: [e.message_id for e in rec_a.delivered] == [lost.message_id])

        # purge asks for confirmation (no tty here: refused, a usage error), then --yes
        await a.dead_letters.add(
            _env("m-x"), "no_owner", Trail(deliveries=0, failure=None), owner=""
        )
        code, _, err = await cli("dlq", "purge", "--all")
        assert code == 2 and "pass --yes" in err
        code, out, _ = await cli("dlq", "purge", "--all", "--dry-run", "--json")
        assert code == 0 and len(json.loads(out)["purged"]) == 1
        code, out, _ = await cli("dlq", "purge", "--all", "--yes")
        assert code == 0 and "1 purged" in out
        assert await redis.xlen(a.keys.dlq()) == 0
        assert (await cli("dlq", "purge", "x", "--all"))[0] == 2

        # drain: b notices on its next presence refresh and drains itself
        code, out, _ = await cli("drain", "b", "--yes", "--reason", "kernel update")
        assert code == 0 and b.token in out
        await until(lambda: b.lifecycle.drain_done.is_set())
        code, out, _ = await cli("ownership", "--json")
        assert [r["instance_id"] for r in json.loads(out)["replicas"]] == ["a"]
        assert (await cli("drain", "b", "--yes"))[0] == 1  # not live any more

        # every change done, newest first, with who and why (the dry runs changed nothing)
        code, out, _ = await cli("ops-log", "--json")
        records = json.loads(out)
        assert code == 0
        assert [(r["action"], r["source"]) for r in records] == [
            ("drain", "cli"),
            ("dlq purge", "cli"),
            ("dlq replay", "cli"),
            ("dlq replay", "cli"),
        ]
        assert records[0]["reason"] == "kernel update" and b.token in records[0]["outcome"]
        assert records[0]["user"] and records[0]["host"]
        assert records[1]["target"] == "all entries" and records[1]["outcome"].startswith("1 ")
        assert records[2]["target"].endswith(" to a")


def _env(message_id: str) -> Any:
    from cross_instance.envelope import Envelope

    return Envelope(message_id=message_id, kind="frame", target_kind="node", target_id="n9",
                    payload="", created_ms=1)  # fmt: skip


async def test_an_unknown_dlq_reason_is_refused_by_name(
    cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await cli("dlq", "list", "--reason", "no-owner")
    assert code == 2
    assert "invalid choice: 'no-owner'" in err
