"""The messages one replica sends another through the runtime (``Envelope.kind`` + payload).

Every kind is written here once; the outbox (:mod:`scheduler.outbox`) sends them and
:func:`decode_for_session` reads them back (a node is only ever sent frames):

===============  =========  ===========================================================
kind             target     payload
===============  =========  ===========================================================
``frame``        node/sess  an encoded frame, written to the socket as is (:class:`RawFrame`)
``job_result``   session    the node's ``job_result`` (already completed in Redis)
``asr_partial``  session    the node's ``asr_partial`` (from the job's current node)
``job_failed``   session    :class:`JobFailed`: the job ended without a result
===============  =========  ===========================================================

``job_assign`` is encoded in one place, :func:`encode_job_assign`: the payload the core keeps
for failover and the frame a node receives are the same bytes.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

from scheduler import protocol as wire

__all__ = [
    "ASR_PARTIAL",
    "FRAME",
    "JOB_FAILED",
    "JOB_RESULT",
    "FailureCode",
    "JobFailed",
    "MessageKind",
    "RawFrame",
    "SessionDelivery",
    "assigned_job",
    "decode_for_session",
    "encode_job_assign",
    "encode_job_failed",
]

MessageKind = Literal["frame", "job_result", "asr_partial", "job_failed"]
FRAME: Final = "frame"
JOB_RESULT: Final = "job_result"
ASR_PARTIAL: Final = "asr_partial"
JOB_FAILED: Final = "job_failed"

# The codes a job that ends without a node's result is reported with (scheduler.jobs picks them).
FailureCode = Literal[
    "NO_AVAILABLE_NODE", "JOB_TIMEOUT", "INTERNAL_ERROR", "SCHEDULER_DEPENDENCY_DOWN"
]


class RawFrame(msgspec.Struct, frozen=True):
    """An encoded frame for the target's socket, relayed untouched."""

    data: str


class JobFailed(msgspec.Struct, frozen=True):
    """A job failed over to nowhere: the session tells its client (``job_failed``)."""

    job_id: str
    utterance_index: int
    code: FailureCode
    trace_id: str


SessionDelivery: TypeAlias = RawFrame | wire.JobResult | wire.NodeAsrPartial | JobFailed

_job_failed_decoder = msgspec.json.Decoder(JobFailed)


class _Assigned(msgspec.Struct, frozen=True):
    type: str = ""
    job_id: str = ""
    attempt_id: int = -1


_assigned_decoder = msgspec.json.Decoder(_Assigned)


def encode_job_assign(assign: wire.JobAssign) -> str:
    return wire.encode(assign).decode()


def encode_job_failed(failed: JobFailed) -> str:
    return msgspec.json.encode(failed).decode()


def assigned_job(payload: str) -> tuple[str, int] | None:
    """The job and attempt a ``frame`` for a node assigns; None for any other frame."""
    try:
        frame = _assigned_decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    if frame.type != "job_assign" or not frame.job_id:
        return None
    return frame.job_id, frame.attempt_id


def decode_for_session(kind: str, payload: str) -> SessionDelivery | None:
    """One message for a session; None for a kind no replica sends (it is ignored). Raises for
    a malformed payload (the runtime then retries and dead-letters it)."""
    if kind == FRAME:
        return RawFrame(payload)
    if kind == JOB_RESULT:
        return wire.decode_as(payload, wire.JobResult)
    if kind == ASR_PARTIAL:
        return wire.decode_as(payload, wire.NodeAsrPartial)
    if kind == JOB_FAILED:
        return _job_failed_decoder.decode(payload)
    return None
