"""What fuzzing with the ids of other sockets found, each as a minimal reproducer.

A reproducer of a bug not fixed yet is a strict xfail: it fails today, and the day it passes the
marker must go (docs/security.md, Fuzzing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.clients import SimBrowser, SimNode
from tests.e2e.daemons import Replica

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

Message = dict[str, Any]


def is_type(kind: str, **fields: Any) -> Callable[[Message], bool]:
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


@pytest.mark.xfail(
    strict=True,
    reason="a node's job_ack is answered with a NODE_ACCEPTED ui_event sent to the session_id "
    "the frame names, not the job's session (scheduler/node_gateway.py, _handle, JobAck): a node "
    "holding any job can put events into any session",
)
async def test_a_job_ack_naming_another_session_reaches_only_the_jobs_session(
    fuzzed_replicas: list[Replica], peers: Any
) -> None:
    replica = fuzzed_replicas[0]  # one replica: every delivery below is in process, in order
    victim = await peers(SimBrowser(replica.ws + "/ws/session", "fzvictim-a", "fzvictim-b"))
    await victim.init()
    node = await peers(SimNode(replica.ws + "/ws/node", (["fzack-a"], ["fzack-b"])))
    await node.register()
    own = await peers(SimBrowser(replica.ws + "/ws/session", "fzack-a", "fzack-b"))
    await own.init()
    await own.speak(5)
    job = await node.wait_for(is_type("job_assign", session_id=own.session_id))

    # The frame: the node's own job and attempt, another socket's session.
    await node.send(
        {"type": "job_ack", "job_id": job["job_id"], "attempt_id": job["attempt_id"],
         "node_id": node.node_id, "session_id": victim.session_id, "trace_id": job["trace_id"]}
    )  # fmt: skip
    # Causal marker: the node's next frame is handled after the ack was, and delivers in process
    # to the job's own session; then a heartbeat round trip on the victim's socket brings in
    # anything queued to it before.
    await node.send(node.partial_for(job))
    await own.wait_type("asr_partial")
    start = len(victim.received)
    await victim.send({"type": "client_heartbeat", "session_id": victim.session_id, "timestamp": 1})
    await victim.wait_for(is_type("server_heartbeat"), start=start)

    leaked = [m for m in victim.received if m.get("job_id") == job["job_id"]]
    assert leaked == [], f"the victim session received {leaked}"
