"""The cross-replica message kinds (``scheduler.messages``) and the failure a client reads."""

from __future__ import annotations

import msgspec
import pytest

from scheduler import messages
from scheduler import protocol as wire
from scheduler.jobs import failover_code, failure_message
from scheduler.scheduling.codes import AllNodesFull, NoLiveNode, NoPool
from scheduler.scheduling.types import FailoverAction


def test_job_failed_keeps_its_payload_shape() -> None:
    failed = messages.JobFailed("job-1", 3, "JOB_TIMEOUT", "t-1")
    payload = messages.encode_job_failed(failed)
    assert payload == '{"job_id":"job-1","utterance_index":3,"code":"JOB_TIMEOUT","trace_id":"t-1"}'
    assert messages.decode_for_session(messages.JOB_FAILED, payload) == failed


def test_each_kind_decodes_to_its_type() -> None:
    result = wire.JobResult(job_id="job-1", attempt_id=1, node_id="node-A", session_id="s-A",
                            utterance_index=0, success=True, trace_id="t")  # fmt: skip
    decoded = messages.decode_for_session(messages.JOB_RESULT, wire.encode(result).decode())
    assert decoded == result
    assert messages.decode_for_session(messages.FRAME, "{}") == messages.RawFrame("{}")
    assert messages.decode_for_session("something_else", "{}") is None


def test_a_malformed_payload_raises_so_the_runtime_retries_it() -> None:
    with pytest.raises(msgspec.ValidationError):
        messages.decode_for_session(messages.JOB_FAILED, '{"job_id":"job-1"}')


def _move(**changes: object) -> FailoverAction:
    fields: dict[str, object] = dict(
        job_id="job-1", session_id="s-A", utterance_index=0, tgt_lang="en", old_node="node-A",
        cause="node_offline", outcome="failed", attempt=2, error="NO_LIVE_NODE",
    )  # fmt: skip
    fields.update(changes)
    return msgspec.convert(fields, FailoverAction)


def test_a_failed_move_is_told_as_a_timeout_or_as_no_node() -> None:
    assert failover_code(_move()) == "NO_AVAILABLE_NODE"
    assert failover_code(_move(error="MAX_ATTEMPTS")) == "JOB_TIMEOUT"
    assert failover_code(_move(cause="timeout", error="ALL_FULL")) == "JOB_TIMEOUT"


@pytest.mark.parametrize(
    "cause",
    [None, NoPool("dispatch_job: NO_POOL", script="dispatch_job"),
     AllNodesFull("dispatch_job: ALL_FULL", script="dispatch_job"),
     NoLiveNode("dispatch_job: NO_LIVE_NODE", script="dispatch_job")],
)  # fmt: skip
@pytest.mark.parametrize("code", ["NO_AVAILABLE_NODE", "JOB_TIMEOUT", "INTERNAL_ERROR"])
def test_what_a_person_reads_is_a_sentence_without_internal_words(
    code: messages.FailureCode, cause: Exception | None
) -> None:
    """The browser alert()s `message`: no script names, reply tokens or pool pairs in it."""
    text = failure_message(code, cause)
    assert text[0].isupper() and text.endswith(".")
    for internal in ("dispatch_job", "NO_POOL", "ALL_FULL", "NO_LIVE_NODE", "_", "zh:en", code):
        assert internal not in text


def test_busy_nodes_and_no_nodes_read_differently() -> None:
    busy = failure_message("NO_AVAILABLE_NODE", AllNodesFull("dispatch_job: ALL_FULL"))
    assert "busy" in busy and busy != failure_message("NO_AVAILABLE_NODE")
