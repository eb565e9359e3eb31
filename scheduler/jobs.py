"""One job's life, from the utterance a session finalized to the frames its client gets.

Read top to bottom, in the order a job lives it:

1. **Dispatch** (:meth:`JobLifecycle.dispatch_utterance`, on the session's replica): one job per
   target language (a room fans an utterance out to each language its members speak); the core
   picks a node; the ``job_assign`` goes to that node, the client gets ``ui_event DISPATCHED``.
2. **Progress** (:meth:`~JobLifecycle.on_progress`, :meth:`~JobLifecycle.on_partial`, on the
   node's replica): ``job_ack``/``job_started`` move the job in the core; partial subtitles go to
   the job's session, only from the job's current node.
3. **Completion** (:meth:`~JobLifecycle.on_result`, on the node's replica): the core accepts the
   first valid result of any attempt (a node that reconnected sends the result of a job that
   moved on meanwhile); it travels to the session the job record names, and the node holding the
   job's current attempt, if another, is told to cancel.
4. **Failover** (:meth:`~JobLifecycle.carry_out_moves`, after a sweep, a node going offline or a
   reconnected node reporting it runs nothing): a silent node is told to cancel; the job goes to
   another node, waits for its node to come back (held), or fails. A job that waited for a slot
   (every node of its pair busy at dispatch) is carried out the same way when a completion, a
   later dispatch or the sweep places it, or when its wait runs out.
5. **At the session** (:meth:`~JobLifecycle.deliver`, on the session's replica): a result becomes
   the client's frames (:class:`scheduler.relay.ResultRelay`), translations fanned out to the
   room members that asked for that language; a failure becomes ``ui_event ERROR`` + ``error``.
6. **What the user is told when a job fails**: :func:`failure_message`, a sentence beside the
   code; every ``error`` frame of a session goes through :meth:`~JobLifecycle.tell_error`, which
   drops repeats of one code within ``session.error_repeat_window_ms`` (the browser ``alert()``s
   each one).

The core (Redis scripts) decides every transition; this module carries out what it returns.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from cross_instance.clock import now_ms
from scheduler import protocol as wire
from scheduler import relay
from scheduler.config import SessionConfig
from scheduler.ids import new_job_id
from scheduler.links import Link
from scheduler.messages import (
    FailureCode,
    JobFailed,
    RawFrame,
    SessionDelivery,
    encode_job_assign,
)
from scheduler.metrics import ReplicaMetrics, error_code_label
from scheduler.outbox import Outbox
from scheduler.redis_wait import RedisUnavailable, RedisWait
from scheduler.rooms import RoomPresence, Rooms
from scheduler.scheduling.codes import AllNodesFull, NoNodeAvailable, SchedulingError
from scheduler.scheduling.core import SchedulingCore
from scheduler.scheduling.types import DispatchRequest, FailoverAction, Moves
from scheduler.session_flow import FinalizeUtterance
from scheduler.tracing import NO_TRACING, Tracing

__all__ = ["JobLifecycle", "SessionJobs", "failover_code", "failure_message"]

log = logging.getLogger("lingua.jobs")


@dataclass
class SessionJobs:
    """What the job lifecycle keeps per session, on the session's replica."""

    session_id: str
    init: wire.SessionInit
    trace_id: str
    link: Link
    results: relay.ResultRelay
    errors: relay.ErrorThrottle
    # job id -> sessions that receive its result (room mode); bounded like every per-session map.
    recipients: OrderedDict[str, list[str]] = field(default_factory=OrderedDict)
    room: RoomPresence | None = None  # the room this session is in, if any
    # job id -> its utterance index, for the jobs dispatched and not yet answered.
    unanswered: dict[str, int] = field(default_factory=dict)
    # job id -> when its utterance was finalized (ms), for the same jobs: utterance latency.
    finalized: dict[str, int] = field(default_factory=dict)


class JobLifecycle:
    def __init__(
        self,
        core: SchedulingCore,
        outbox: Outbox,
        config: SessionConfig,
        metrics: ReplicaMetrics,
        rooms: Rooms,
        redis_wait: RedisWait,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.core = core
        self.outbox = outbox
        self.config = config
        self.metrics = metrics
        self.rooms = rooms
        self.tracing = tracing
        # A result and a dispatch wait for Redis within redis.outage_wait_ms (issue 12).
        self.redis_wait = redis_wait

    def open_session(
        self, session_id: str, init: wire.SessionInit, trace_id: str, link: Link
    ) -> SessionJobs:
        return SessionJobs(
            session_id=session_id,
            init=init,
            trace_id=trace_id,
            link=link,
            results=relay.ResultRelay(self.config, session_id),
            errors=relay.ErrorThrottle(self.config.error_repeat_window_ms),
        )

    # -- 1. dispatch -------------------------------------------------------------------------

    async def dispatch_utterance(
        self, session: SessionJobs, utterance: FinalizeUtterance, targets: dict[str, list[str]]
    ) -> None:
        """One job per target language; ``targets`` maps each to the sessions that get it."""
        with self.tracing.dispatch(
            session.trace_id, session.session_id, utterance.utterance_index, utterance.reason
        ):
            await self._dispatch_all(session, utterance, targets)

    async def _dispatch_all(
        self, session: SessionJobs, utterance: FinalizeUtterance, targets: dict[str, list[str]]
    ) -> None:
        init = session.init
        for tgt_lang, recipients in targets.items():
            spec = relay.JobSpec(
                job_id=new_job_id(),
                session_id=session.session_id,
                utterance_index=utterance.utterance_index,
                src_lang=init.src_lang,
                tgt_lang=tgt_lang,
                init=init,
                audio=utterance.audio,
                trace_id=session.trace_id,
                turn_id=utterance.turn_id,
                reason=utterance.reason,
                padding_ms=utterance.padding_ms,
                finalized_ms=utterance.finalized_ms,
            )
            await self._dispatch(session, spec, recipients)

    async def _dispatch(
        self, session: SessionJobs, spec: relay.JobSpec, recipients: list[str]
    ) -> None:
        assign = relay.job_assign(spec, self.config)
        init = session.init
        # Pool pair: two-way auto mode selects from lang_a:lang_b (docs/protocol.md; the original's §3.5).
        # The job keeps its own target: each target language of an utterance is its own job.
        pool: tuple[str, str] | None = None
        src_lang = spec.src_lang
        if spec.src_lang == "auto" and init.lang_a and init.lang_b:
            pool = (init.lang_a, init.lang_b)
            src_lang = init.lang_a
        request = DispatchRequest(
            session_id=spec.session_id,
            utterance_index=spec.utterance_index,
            src_lang=src_lang,
            tgt_lang=spec.tgt_lang,
            pool=pool,
            turn_id=spec.turn_id,
            reason=spec.reason,
            payload=encode_job_assign(assign),  # the very bytes the node is sent
            job_id=spec.job_id,
        )
        try:
            dispatched = await self.redis_wait.ride_out(
                "dispatch", lambda: self.core.dispatch(request)
            )
        except NoNodeAvailable as exc:
            self.metrics.jobs.labels("no_node").inc()
            log.info(
                "no node: %s",
                exc,
                extra={"session_id": spec.session_id, "utterance_index": spec.utterance_index},
            )
            self._tell_failure(
                session, spec.job_id, spec.utterance_index, "NO_AVAILABLE_NODE", spec.trace_id, exc
            )
            return
        except RedisUnavailable as exc:
            log.warning("dispatch failed: %s", exc, extra={"session_id": spec.session_id})
            self._tell_failure(
                session,
                spec.job_id,
                spec.utterance_index,
                "SCHEDULER_DEPENDENCY_DOWN",
                spec.trace_id,
            )
            return
        except Exception:
            log.exception("dispatch failed", extra={"session_id": spec.session_id})
            self._tell_failure(
                session, spec.job_id, spec.utterance_index, "INTERNAL_ERROR", spec.trace_id
            )
            return
        # A try whose reply was lost (retried by us or by the Redis client) may have created
        # our job: the replay names our own job id, minted for this call, which no node has
        # been sent yet.
        created = dispatched.created or dispatched.job_id == spec.job_id
        self.tracing.note(
            "job placed",
            job_id=dispatched.job_id,
            tgt_lang=spec.tgt_lang,
            state=dispatched.state,
            node_id=dispatched.node_id,
        )
        session.recipients[dispatched.job_id] = recipients
        session.unanswered[dispatched.job_id] = spec.utterance_index
        session.finalized[dispatched.job_id] = spec.finalized_ms
        while len(session.unanswered) > self.config.result_dedup_max:
            del session.unanswered[next(iter(session.unanswered))]
        while len(session.finalized) > self.config.result_dedup_max:
            del session.finalized[next(iter(session.finalized))]
        while len(session.recipients) > self.config.result_dedup_max:
            session.recipients.popitem(last=False)
        await self.carry_out_moves(Moves(dispatched.placed))
        if dispatched.state == "waiting":
            # Every node of the pair is busy: job_assign and DISPATCHED follow when a slot is
            # handed to it; an error when its wait runs out (carry_out_moves, either way).
            if created:
                self.metrics.jobs.labels("waiting").inc()
            return
        self.metrics.jobs.labels("dispatched").inc()
        if created:
            assign = msgspec.structs.replace(
                assign, job_id=dispatched.job_id, attempt_id=dispatched.attempt
            )
            await self._send(
                "send",
                lambda: self.outbox.assign_to_node(
                    dispatched.node_id, assign, finalized_ms=spec.finalized_ms
                ),
            )
        session.link.send(
            wire.encode(
                relay.dispatched_event(
                    spec.session_id, dispatched.job_id, spec.utterance_index, spec.trace_id
                )
            )
        )

    async def _send(self, path: str, send: Callable[[], Awaitable[object]]) -> None:
        """A send through the runtime (an inbox append when the target is on another replica),
        waiting for Redis like the call before it. Given up after ``redis.outage_wait_ms``:
        logged and counted; the job then moves or fails at its deadline."""
        try:
            await self.redis_wait.ride_out(path, send)
        except RedisUnavailable as exc:
            self.metrics.jobs.labels(f"{path}_unsent").inc()
            log.warning("not sent: %s", exc)

    # -- 2. progress on the node -------------------------------------------------------------

    async def on_progress(self, node_id: str, message: wire.JobAck | wire.JobStarted) -> None:
        try:
            if isinstance(message, wire.JobAck):
                await self.core.ack(message.job_id, node_id, message.attempt_id)
            else:
                await self.core.start(message.job_id, node_id, message.attempt_id)
        except SchedulingError as exc:
            log.info(
                "progress refused: %s", exc, extra={"node_id": node_id, "job_id": message.job_id}
            )
            return
        if isinstance(message, wire.JobAck):
            # The job record says whose job it is; the node's claim does not (§7.13).
            holder = await self.core.job_holder(message.job_id)
            if holder is None:
                return
            event = wire.ui_event(
                holder.session_id, message.job_id, None, "NODE_ACCEPTED", message.trace_id
            )
            await self.outbox.frame_to_session(holder.session_id, event, message.trace_id)

    async def on_partial(self, node_id: str, partial: wire.NodeAsrPartial) -> None:
        holder = await self.core.job_holder(partial.job_id)
        # Only the job's current node, only into the job's own session (§7.13).
        if (
            holder is not None
            and holder.node_id == node_id
            and holder.session_id == partial.session_id
        ):
            await self.outbox.partial_to_session(holder.session_id, partial)

    # -- 3. completion -----------------------------------------------------------------------

    async def on_result(self, node_id: str, message: wire.JobResult) -> None:
        """Waits for Redis (``redis.outage_wait_ms``) rather than failing: the node's socket
        reads its next frame only after this, so its results complete in order."""
        # One nonce for every try (ours and the Redis client's): a try that finds the job
        # completed by an earlier one, whose reply was lost, still forwards the result.
        nonce = secrets.token_hex(8)
        try:
            completion = await self.redis_wait.ride_out(
                "result",
                lambda: self.core.complete(
                    message.job_id, node_id, message.attempt_id, ok=message.success, nonce=nonce
                ),
            )
        except RedisUnavailable as exc:
            # The job stays active: it moves or fails at its deadline like a silent one.
            self.metrics.jobs.labels("result_unsaved").inc()
            log.warning(
                "result not completed: %s",
                exc,
                extra={"node_id": node_id, "job_id": message.job_id},
            )
            return
        except SchedulingError as exc:
            # Stale attempt, foreign node or unknown job: refused, nothing reaches the client.
            log.info(
                "result refused: %s",
                exc,
                extra={"node_id": node_id, "job_id": message.job_id, "attempt": message.attempt_id},
            )
            self.metrics.jobs.labels("result_refused").inc()
            return
        if completion.replayed:
            # Already completed by an earlier copy of this result: it reached the session then.
            return
        self.metrics.jobs.labels("completed").inc()
        # The job record says whose result it is; the node's claim does not (§7.13).
        result = msgspec.structs.replace(
            message,
            session_id=completion.session_id,
            utterance_index=completion.utterance_index,
        )
        await self._send(
            "result", lambda: self.outbox.result_to_session(completion.session_id, result)
        )
        if completion.cancel_node is not None:
            # The job had moved on (this node's socket dropped while it worked): its result won,
            # the node working on the later attempt stops.
            self.metrics.jobs.labels("cancelled").inc()
            await self.outbox.cancel_on_node(
                completion.cancel_node,
                wire.JobCancel(
                    job_id=message.job_id, trace_id=message.trace_id, reason="result_received"
                ),
            )
        if completion.handed is not None:  # the freed slot went to a waiting job
            await self.carry_out_moves(Moves([completion.handed]))

    # -- 4. failover -------------------------------------------------------------------------

    async def carry_out_moves(self, moves: Moves) -> None:
        """Carry out what a sweep, a node going offline or a node's lost jobs decided."""
        if moves.unreadable:
            self.metrics.jobs.labels("move_unreadable").inc(moves.unreadable)
        for move in moves.actions:
            try:
                await self._carry_out(move)
            except Exception:
                log.exception("carrying out a job move failed", extra={"job_id": move.job_id})

    async def _carry_out(self, move: FailoverAction) -> None:
        assign = msgspec.json.decode(move.payload, type=wire.JobAssign) if move.payload else None
        trace_id = assign.trace_id if assign else ""
        if move.outcome == "held":
            # No other node: the job waits for its node to reconnect with the result, at most
            # until its deadline (then the sweep moves or fails it).
            self.metrics.jobs.labels("held").inc()
            log.info(
                "job held for its node: %s",
                move.error,
                extra={"job_id": move.job_id, "node_id": move.old_node},
            )
            return
        if move.cancel_old:
            # The old node is connected but silent: tell it to drop the job.
            self.metrics.jobs.labels("cancelled").inc()
            await self.outbox.cancel_on_node(
                move.old_node,
                wire.JobCancel(job_id=move.job_id, trace_id=trace_id, reason="job_timeout"),
            )
        if move.error == "SESSION_ENDED":
            # Nobody is left to read a result or an error: the slot is free, the node told.
            self.metrics.jobs.labels("abandoned").inc()
            log.info(
                "job of an ended session dropped",
                extra={"job_id": move.job_id, "session_id": move.session_id},
            )
            return
        if move.cause == "slot_wait" and move.outcome == "failed":
            self.metrics.slot_wait_expired.inc()
        if move.outcome == "reassigned" and move.new_node and assign is not None:
            await self.outbox.assign_to_node(
                move.new_node, msgspec.structs.replace(assign, attempt_id=move.attempt)
            )
            if move.cause != "slot_wait":
                self.metrics.jobs.labels("reassigned").inc()
                return
            self.metrics.jobs.labels("dispatched").inc()
            self.metrics.slot_wait.observe((move.waited_ms or 0) / 1000)
            event = relay.dispatched_event(
                move.session_id, move.job_id, move.utterance_index, trace_id
            )
            await self.outbox.frame_to_session(move.session_id, event, trace_id)
            return
        self.metrics.jobs.labels("failed").inc()
        failed = JobFailed(
            job_id=move.job_id,
            utterance_index=move.utterance_index,
            code=failover_code(move),
            trace_id=trace_id,
        )
        await self.outbox.failure_to_session(move.session_id, failed)

    # -- 5. at the session -------------------------------------------------------------------

    async def deliver(
        self, session: SessionJobs, delivery: SessionDelivery, finalized_ms: int = 0
    ) -> None:
        """A message for this session from any replica (or this one), as client frames;
        ``finalized_ms``: a relayed ``translation_result``'s utterance finalize time."""
        if not isinstance(delivery, RawFrame | wire.NodeAsrPartial):
            session.unanswered.pop(delivery.job_id, None)
            finalized_ms = session.finalized.pop(delivery.job_id, 0)
        if isinstance(delivery, RawFrame):
            if session.link.send(delivery.data.encode()):
                self.metrics.observe_utterance(finalized_ms, now_ms())
            return
        # Every frame carries the session's trace id, whatever the node or the failover knew.
        trace_id = delivery.trace_id or session.trace_id
        if isinstance(delivery, wire.JobResult):
            with self.tracing.relay(
                session.session_id, delivery.job_id, delivery.utterance_index, trace_id
            ):
                recipients = session.recipients.get(delivery.job_id, [session.session_id])
                frames = session.results.on_result(
                    msgspec.structs.replace(delivery, trace_id=trace_id), now_ms()
                )
                self.tracing.label("lingua.frames", len(frames))
                await self._fan_out(session, frames, recipients, finalized_ms)
        elif isinstance(delivery, wire.NodeAsrPartial):
            partial = msgspec.structs.replace(delivery, trace_id=trace_id)
            for frame in relay.partial_frames(partial):
                session.link.send(wire.encode(frame))
        else:
            self._tell_failure(
                session, delivery.job_id, delivery.utterance_index, delivery.code, trace_id
            )

    async def _fan_out(
        self,
        session: SessionJobs,
        frames: list[relay.Frame],
        recipients: list[str],
        finalized_ms: int,
    ) -> None:
        for frame in frames:
            if isinstance(frame, wire.TranslationResult) and recipients != [session.session_id]:
                for target in recipients:
                    await self.outbox.frame_to_session(
                        target,
                        msgspec.structs.replace(frame, session_id=target),
                        frame.trace_id,
                        finalized_ms,
                    )
                await self.room_activity(session)
            elif isinstance(frame, wire.ErrorMessage):
                self.tell_error(session, frame)
            elif session.link.send(wire.encode(frame)) and isinstance(
                frame, wire.TranslationResult
            ):
                self.metrics.observe_utterance(finalized_ms, now_ms())

    async def room_activity(self, session: SessionJobs) -> None:
        """The session did something in its room (spoke, relayed, got a result fanned out):
        keep the room alive, touching Redis at most once per ``session.room_touch_interval_ms``.
        A room found gone is forgotten (its members were sent ``room_expired``)."""
        room = session.room
        if room is not None and not await self.rooms.keep_alive(room, now_ms()):
            session.room = None

    # -- 6. the user-facing failure ------------------------------------------------------------

    def tell_error(self, session: SessionJobs, error: wire.ErrorMessage) -> None:
        """Every ``error`` frame of a session goes out here: a repeat of a code sent less than
        ``session.error_repeat_window_ms`` ago is dropped and counted."""
        label = error_code_label(error.code)
        if not session.errors.allow(error.code, now_ms()):
            self.metrics.errors_suppressed.labels(label).inc()
            return
        self.metrics.errors_sent.labels(label).inc()
        session.link.send(wire.encode(error))

    def _tell_failure(
        self,
        session: SessionJobs,
        job_id: str,
        utterance_index: int,
        code: FailureCode,
        trace_id: str,
        cause: Exception | None = None,
    ) -> None:
        self.tracing.note("failure told", job_id=job_id, code=code)
        for frame in relay.failure_frames(
            session.session_id,
            job_id,
            utterance_index,
            code,
            failure_message(code, cause),
            trace_id,
        ):
            if isinstance(frame, wire.ErrorMessage):
                self.tell_error(session, frame)
            else:
                session.link.send(wire.encode(frame))


def failover_code(move: FailoverAction) -> FailureCode:
    """A job failover could not place: it ran out of time or attempts, or of nodes."""
    if move.cause == "timeout" or move.error == "MAX_ATTEMPTS":
        return "JOB_TIMEOUT"
    return "NO_AVAILABLE_NODE"


# What a person reads in the browser's alert(): no script names, reply codes or pool names (the
# log line beside each failure has those); `code` stays the machine-readable part.
_FAILURE_MESSAGES: dict[FailureCode, str] = {
    "NO_AVAILABLE_NODE": "No translator is available for this language right now. Please try "
    "again later.",
    "JOB_TIMEOUT": "The translation took too long and was dropped. Please say it again.",
    "INTERNAL_ERROR": "Something went wrong on our side. Please try again.",
    "SCHEDULER_DEPENDENCY_DOWN": "The translation service lost its database for too long and "
    "this utterance was not translated. Please say it again.",
}
_ALL_BUSY = "All translators for this language are busy. Please try again in a moment."


def failure_message(code: FailureCode, cause: Exception | None = None) -> str:
    """The sentence the client reads beside ``code``; ``cause`` (the core's refusal) only
    chooses between sentences, its own text stays in the logs."""
    if isinstance(cause, AllNodesFull):
        return _ALL_BUSY
    return _FAILURE_MESSAGES[code]
