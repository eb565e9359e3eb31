"""A real node's brief disconnect, across replicas, replayed from the recorded frames
(tests/fixtures/real_clients/node_reconnect_then_result.json): the job is assigned, the node's
socket drops, the node registers again with the same id on another replica and sends the old
attempt's result there. The browser gets exactly one translation, the node the job had moved to
gets ``job_cancel``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.clients import SimBrowser, SimNode, is_job
from tests.e2e.daemons import Replica

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

RECORDING = (
    Path(__file__).parents[1] / "fixtures" / "real_clients" / "node_reconnect_then_result.json"
)


def recorded(kind: str) -> dict[str, Any]:
    """The first frame of ``kind`` the real node sent in the recording."""
    for entry in orjson.loads(RECORDING.read_bytes()):
        if entry["dir"] == "out" and entry["frame"]["type"] == kind:
            return copy.deepcopy(entry["frame"])
    raise LookupError(kind)


class RecordedNode(SimNode):
    """Sends the real node's frames (its register, heartbeat and result), languages replaced by
    the test's pair so no other test's jobs come here."""

    def _langs(self, frame: dict[str, Any]) -> dict[str, Any]:
        frame["language_capabilities"].update(
            asr_languages=self.asr, semantic_languages=self.semantic, tts_languages=self.semantic
        )
        frame["node_id"] = self.node_id
        return frame

    def register_message(self) -> dict[str, Any]:
        return self._langs(recorded("node_register"))

    def heartbeat_message(self, running_jobs: int = 0) -> dict[str, Any]:
        frame = self._langs(recorded("node_heartbeat"))
        frame["resource_usage"]["running_jobs"] = running_jobs
        return frame

    def result_for(
        self, job: dict[str, Any], text_asr: str = "你好", text_translated: str = "Hello"
    ) -> dict[str, Any]:
        frame = recorded("job_result")
        frame.update(
            job_id=job["job_id"],
            attempt_id=job["attempt_id"],
            node_id=self.node_id,
            session_id=job["session_id"],
            utterance_index=job["utterance_index"],
            trace_id=job["trace_id"],
        )
        return frame


async def test_a_result_sent_after_reconnecting_to_another_replica_reaches_the_browser_once(
    replicas: list[Replica],
    peers,
    pair,  # type: ignore[no-untyped-def]
) -> None:
    src, tgt = pair
    node = await peers(RecordedNode(replicas[0].ws + "/ws/node", ([src], [tgt])))
    await node.register()  # node_id null: it gets one, then its first heartbeat
    browser = await peers(SimBrowser(replicas[1].ws + "/ws/session", src, tgt))
    await browser.init()
    await browser.speak(10)
    job = await node.wait_for(is_job)
    other = await peers(SimNode(replicas[2].ws + "/ws/node", ([src], [tgt])))
    await other.register()
    await node.close()  # the drop: the job moves to the other node at once
    moved = await other.wait_type("job_assign", job_id=job["job_id"])
    assert moved["attempt_id"] == 2
    # the node comes back with the same id, through the load balancer: another replica
    back = await peers(RecordedNode(replicas[1].ws + "/ws/node", ([src], [tgt]), node.node_id))
    await back.send(back.register_message())
    ack = await back.wait_type("node_register_ack")
    assert ack["node_id"] == node.node_id
    await back.send(back.heartbeat_message(running_jobs=1))
    await back.send(back.result_for(job))  # attempt 1, on the new connection
    got = await browser.wait_type("translation_result", job_id=job["job_id"])
    assert got["text_translated"] == "hello utterance 0"
    cancel = await other.wait_type("job_cancel", job_id=job["job_id"])
    assert cancel["reason"] == "result_received"
    # the other node answers anyway: refused, the browser keeps its one translation
    await other.send(other.result_for(moved))
    await back.send(back.heartbeat_message(running_jobs=0))
    await browser.send(
        {"type": "client_heartbeat", "session_id": browser.session_id, "timestamp": 1}
    )
    await browser.wait_type("server_heartbeat")
    assert len(browser.of_type("translation_result")) == 1
    assert browser.of_type("error") == []
