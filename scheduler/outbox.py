"""Sends to a node or a session wherever it is connected, through the runtime.

The runtime delivers in process when the target's socket is on this replica, and through the
target owner's inbox otherwise; either way the message arrives as one of the kinds of
:mod:`scheduler.messages`. Frames for the socket a handler is serving go straight to its
:class:`~scheduler.links.Link` instead.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from scheduler import messages
from scheduler import protocol as wire
from scheduler.tracing import NO_TRACING, Tracing

__all__ = ["Outbox", "RuntimeSends"]


class RuntimeSends(Protocol):
    """The part of :class:`cross_instance.runtime.Runtime` the outbox uses."""

    async def send_to_node(
        self,
        node_id: str,
        kind: str,
        payload: str,
        trace_id: str = "",
        *,
        resumable: bool = True,
        began_ms: int = 0,
        tc: str = "",
    ) -> object: ...

    async def send_to_session(
        self,
        session_id: str,
        kind: str,
        payload: str,
        trace_id: str = "",
        *,
        resumable: bool = True,
        began_ms: int = 0,
        tc: str = "",
    ) -> object: ...


class Outbox:
    def __init__(self, runtime: RuntimeSends, tracing: Tracing = NO_TRACING) -> None:
        self._runtime = runtime
        self._tracing = tracing

    # -- to nodes ----------------------------------------------------------------------------

    async def assign_to_node(
        self, node_id: str, assign: wire.JobAssign, *, finalized_ms: int = 0
    ) -> None:
        """``finalized_ms``: when its utterance was finalized (0: unknown, e.g. a failover), for
        the dispatch latency the node's replica measures."""
        await self._to_node(
            node_id, messages.encode_job_assign(assign), assign.trace_id, began_ms=finalized_ms
        )

    async def cancel_on_node(self, node_id: str, cancel: wire.JobCancel) -> None:
        await self._to_node(node_id, wire.encode(cancel).decode(), cancel.trace_id or "")

    async def _to_node(
        self, node_id: str, payload: str, trace_id: str, *, began_ms: int = 0
    ) -> None:
        with self._tracing.send(messages.FRAME, "node", node_id, trace_id) as tc:
            sent = await self._runtime.send_to_node(
                node_id, messages.FRAME, payload, trace_id=trace_id, began_ms=began_ms, tc=tc
            )
            self._tracing.label("lingua.route", getattr(sent, "route", ""))

    # -- to sessions -------------------------------------------------------------------------

    async def frame_to_session(
        self, session_id: str, frame: msgspec.Struct, trace_id: str = "", finalized_ms: int = 0
    ) -> None:
        """``finalized_ms``: a ``translation_result``'s utterance finalize time, for the
        utterance latency the session's replica measures when it writes the frame."""
        await self._to_session(
            session_id, messages.FRAME, wire.encode(frame).decode(), trace_id, finalized_ms
        )

    async def result_to_session(self, session_id: str, result: wire.JobResult) -> None:
        await self._to_session(
            session_id, messages.JOB_RESULT, wire.encode(result).decode(), result.trace_id
        )

    async def partial_to_session(self, session_id: str, partial: wire.NodeAsrPartial) -> None:
        await self._to_session(
            session_id, messages.ASR_PARTIAL, wire.encode(partial).decode(), partial.trace_id
        )

    async def failure_to_session(self, session_id: str, failed: messages.JobFailed) -> None:
        await self._to_session(
            session_id, messages.JOB_FAILED, messages.encode_job_failed(failed), failed.trace_id
        )

    async def _to_session(
        self, session_id: str, kind: str, payload: str, trace_id: str, began_ms: int = 0
    ) -> None:
        # A client session never comes back under its id: once it ended, drop what is left.
        with self._tracing.send(kind, "session", session_id, trace_id) as tc:
            sent = await self._runtime.send_to_session(
                session_id,
                kind,
                payload,
                trace_id=trace_id,
                resumable=False,
                began_ms=began_ms,
                tc=tc,
            )
            self._tracing.label("lingua.route", getattr(sent, "route", ""))
