"""``/ws/session``: client sessions, their utterances, their results (docs/protocol.md; the original's §3, §5).

The session state machine (``scheduler.session_flow``) decides; this module does the I/O: it feeds
the machine decoded frames and timer expiries with ``now``, and carries out its actions (arm a
timer, dispatch an utterance, answer the client). One socket holds one session: a second
``session_init`` ends the first one cleanly (the original leaked it, §3.1). Every frame naming a
``session_id`` must name this socket's session (§7.13).
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import msgspec
from websockets.exceptions import ConnectionClosed

from cross_instance.clock import now_ms
from cross_instance.envelope import Envelope, RuntimeDraining, RuntimeFenced
from scheduler import auth as auth_
from scheduler import limits, messages, relay
from scheduler import protocol as wire
from scheduler import session_flow as flow_
from scheduler.config import LimitsConfig, SessionConfig
from scheduler.ids import new_job_id, new_session_id
from scheduler.jobs import JobLifecycle, SessionJobs
from scheduler.links import CLOSE_POLICY, GatewaySettings, Link
from scheduler.metrics import ReplicaMetrics
from scheduler.outbox import Outbox
from scheduler.redis_wait import RedisUnavailable
from scheduler.rooms import (
    EXPIRED_MESSAGE,
    Participant,
    RoomError,
    RoomFull,
    RoomPresence,
    Rooms,
)
from scheduler.scheduling.core import SchedulingCore

__all__ = ["SessionClaims", "SessionGateway"]

log = logging.getLogger("lingua.session")

# Told once to a session whose utterances a fenced replica can no longer finish.
FENCED_CODE = "SCHEDULER_DEPENDENCY_DOWN"


class SessionClaims(Protocol):
    """Ownership of session ids across replicas (:class:`cross_instance.runtime.Runtime`)."""

    async def claim_session(self, session_id: str) -> str | None: ...

    async def release_session(self, session_id: str) -> bool: ...


@dataclass
class Session:
    session_id: str
    link: Link
    flow: flow_.SessionFlow
    jobs: SessionJobs  # the session's init and trace id, its results, its room, its errors
    # timer kind -> (deadline_ms, generation), armed by the flow, fired by _run_timers.
    timers: dict[str, tuple[int, int]] = field(default_factory=dict)
    timer_wakeup: anyio.Event = field(default_factory=anyio.Event)
    # Finalized utterances for _run_dispatches: the flow and its timers never wait on Redis.
    dispatches: deque[flow_.FinalizeUtterance] = field(default_factory=deque)
    dispatch_wakeup: anyio.Event = field(default_factory=anyio.Event)
    dispatch_lock: anyio.Lock = field(default_factory=anyio.Lock)
    # the utterance being dispatched now (popped from dispatches, its jobs not known yet)
    dispatching: flow_.FinalizeUtterance | None = None
    closed: bool = False
    # What the session's token allows; its tenant holds a lease while the session lives.
    grant: auth_.SessionGrant = auth_.OPEN_SESSION
    tenant_lease: bool = False
    # the replica was fenced: nothing more is dispatched for this session
    fenced: bool = False
    rooms_entered: int = 0  # rooms created or joined (limits.rooms_per_session)
    # the replica drains: the flow is closed, audio now is refused (told once, see drain)
    draining: bool = False
    drain_told: bool = False

    @property
    def room_code(self) -> str | None:
        return self.jobs.room.code if self.jobs.room is not None else None


class SessionGateway:
    def __init__(
        self,
        *,
        core: SchedulingCore,
        claims: SessionClaims,
        jobs: JobLifecycle,
        rooms: Rooms,
        outbox: Outbox,
        config: SessionConfig,
        settings: GatewaySettings,
        metrics: ReplicaMetrics,
        auth: auth_.Authenticator,
        limits: LimitsConfig | None = None,
    ) -> None:
        self.limits = limits or LimitsConfig()
        self.core = core
        self.auth = auth
        self.claims = claims
        self.jobs = jobs
        self.rooms = rooms
        self.outbox = outbox
        self.config = config
        self.settings = settings
        self.metrics = metrics
        self.local: dict[str, Session] = {}
        self._progress = anyio.Event()  # set when a session got an answer or dispatched

    def count(self) -> int:
        return len(self.local)

    def tenant_leases(self) -> list[tuple[str, str]]:
        """``(tenant, session id)`` of the sessions here that count against their tenant."""
        return [
            (s.grant.tenant, s.session_id)
            for s in self.local.values()
            if s.tenant_lease and s.grant.tenant is not None and not s.closed
        ]

    # -- the socket ------------------------------------------------------------------------

    async def serve(self, link: Link, grant: auth_.SessionGrant = auth_.OPEN_SESSION) -> None:
        """``grant``: what the session's token allows (the replica admitted the socket)."""
        session: Session | None = None
        try:
            async with anyio.create_task_group() as tg:
                async for frame in link.ws:
                    self.metrics.frames_in.labels("session").inc()
                    if not link.within_rate():
                        self._rate_limited(link, session)
                        continue
                    try:
                        message = wire.decode_client_message(frame)
                    except wire.ProtocolError as exc:
                        self._error(link, "INVALID_MESSAGE", f"Invalid message format: {exc}")
                        continue
                    if isinstance(message, wire.SessionInit):
                        if session is not None:
                            await self._end(session)
                        session = await self._init(link, message, grant)
                        if session is not None:
                            tg.start_soon(self._run_timers, session)
                            tg.start_soon(self._run_dispatches, session)
                        continue
                    if session is None:
                        self._error(link, "INVALID_SESSION", "Session not initialized")
                        continue
                    named = getattr(message, "session_id", None)
                    if named is not None and named != session.session_id:
                        self._error(
                            link,
                            "INVALID_SESSION",
                            "Session does not belong to this connection",
                        )
                        continue
                    await self._handle(session, message)
                tg.cancel_scope.cancel()
        except* ConnectionClosed:
            # The task group wraps it; a vanished client is an ordinary end.
            pass
        finally:
            if session is not None:
                with anyio.CancelScope(shield=True):
                    await self._end(session)

    def _error(self, link: Link, code: str, message: str) -> None:
        # The answer to one frame the client sent: always sent (unlike job failures, which arrive
        # unasked and are rate-limited in JobLifecycle.tell_error).
        self.metrics.errors_sent.labels(code).inc()
        link.send(wire.encode(wire.ErrorMessage(code=code, message=message)))

    def _rate_limited(self, link: Link, session: Session | None) -> None:
        """A frame beyond the connection's message rate: dropped, counted, and the client told
        at the first drop in a row (through the session's error throttle once it has one)."""
        self.metrics.limit_breaches.labels("session_message_rate").inc()
        bucket = link.rate
        if bucket is None or bucket.refused != 1:
            return
        error = wire.ErrorMessage(
            code=limits.RATE_LIMITED_CODE, message=limits.rate_limited_message(bucket)
        )
        if session is not None:
            self.jobs.tell_error(session.jobs, error)
        else:
            self._error(link, error.code, error.message)

    async def _init(
        self, link: Link, message: wire.SessionInit, grant: auth_.SessionGrant
    ) -> Session | None:
        session_id = new_session_id()
        trace_id = message.trace_id or str(uuid.uuid4())
        # The token's pairs and its tenant's limit, before the session is claimed.
        try:
            auth_.requested_pairs_allowed(grant, message)
            leased = await self._lease_tenant(grant, session_id)
        except auth_.Refusal as refusal:
            self.auth.refuse(link, "session", refusal, {"tenant": grant.tenant})
            return None
        try:
            await self.claims.claim_session(session_id)
        except (RuntimeDraining, RuntimeFenced):
            # This replica is leaving: the client reconnects through the load balancer.
            if leased:
                await self._release_tenant(grant, session_id)
            link.close(self.settings.shutdown_close_code, "draining")
            return None
        except Exception:
            if leased:
                await self._release_tenant(grant, session_id)
            raise
        session = Session(
            session_id=session_id,
            link=link,
            flow=flow_.SessionFlow(self.config, flow_.SessionParams.from_init(message)),
            jobs=self.jobs.open_session(session_id, message, trace_id, link),
            grant=grant,
            tenant_lease=leased,
        )
        self.local[session_id] = session
        link.ident = session_id
        link.send(wire.encode(relay.session_init_ack(session_id, trace_id)))
        log.info("session started", extra={"session_id": session_id, "trace_id": trace_id})
        return session

    async def _lease_tenant(self, grant: auth_.SessionGrant, session_id: str) -> bool:
        """Count the session against its tenant's limit (False: not counted, no limit), or a
        :class:`~scheduler.auth.Refusal` when the tenant has its limit of sessions open."""
        limit = self.auth.session_limit(grant)
        if grant.tenant is None or not limit:
            return False
        if await self.auth.tenants.acquire(grant.tenant, session_id, limit) is None:
            raise auth_.Refusal(
                "tenant_limit",
                "TENANT_SESSION_LIMIT",
                f"Your organisation has its limit of {limit} open sessions: close one and try "
                "again.",
                "too many sessions for the tenant",
            )
        return True

    async def _end(self, session: Session) -> None:
        if session.closed:
            return
        with anyio.CancelScope(shield=True):
            await self._dispatch_queued(session)
        session.closed = True
        try:
            with anyio.fail_after(self.settings.cleanup_timeout_s):
                if session.room_code:
                    await self._leave_room(session)
                await self.core.end_session(session.session_id)
        except Exception:
            log.exception("session clean-up failed", extra={"session_id": session.session_id})
        try:
            try:
                # Its own step: a failed end above must not leave the id owned by this replica.
                with anyio.fail_after(self.settings.cleanup_timeout_s):
                    await self.claims.release_session(session.session_id)
            except Exception:
                log.exception("session release failed", extra={"session_id": session.session_id})
            # And its own step too: the tenant's place comes back whatever happened to the id.
            if session.tenant_lease:
                await self._release_tenant(session.grant, session.session_id)
        finally:
            session.jobs.results.close()
            if self.local.get(session.session_id) is session:
                del self.local[session.session_id]
            session.timer_wakeup.set()
            session.dispatch_wakeup.set()
            self._progress.set()

    async def _release_tenant(self, grant: auth_.SessionGrant, session_id: str) -> None:
        """Give the session's place in its tenant's count back; on failure its lease lapses
        after auth.tenant_lease_ms instead."""
        if grant.tenant is None:
            return
        try:
            with anyio.fail_after(self.settings.cleanup_timeout_s):
                await self.auth.tenants.release(grant.tenant, session_id)
        except Exception:
            log.exception(
                "tenant lease release failed",
                extra={"session_id": session_id, "tenant": grant.tenant},
            )

    # -- client messages -------------------------------------------------------------------

    async def _handle(
        self, session: Session, message: wire.ClientMessage | wire.ServerMessage
    ) -> None:
        if isinstance(message, wire.AudioChunk):
            try:
                audio = base64.b64decode(message.payload or "", validate=True)
            except (binascii.Error, ValueError):
                self._error(
                    session.link,
                    "INVALID_MESSAGE",
                    "audio_chunk payload is not valid base64",
                )
                return
            await self.jobs.room_activity(session.jobs)
            await self._feed(session, flow_.AudioReceived(audio=audio, is_final=message.is_final))
        elif isinstance(message, wire.ClientHeartbeat):
            session.link.send(
                wire.encode(wire.ServerHeartbeat(session_id=session.session_id, timestamp=now_ms()))
            )
        elif isinstance(message, wire.SessionClose):
            await self._feed(session, flow_.CloseSession())
            session.link.send(wire.encode(wire.SessionCloseAck(session_id=session.session_id)))
        elif isinstance(message, wire.TtsStarted):
            await self._feed(session, flow_.TtsPlaybackStarted())
        elif isinstance(message, wire.TtsPlayEnded):
            session.jobs.results.on_tts_ended(message.group_id, now_ms())
            await self._feed(session, flow_.TtsPlaybackEnded(ts_end_ms=message.ts_end_ms))
        elif isinstance(message, wire.Utterance):
            await self._utterance(session, message)
        elif isinstance(
            message, (wire.RoomCreate, wire.RoomJoin, wire.RoomLeave, wire.RoomRawVoicePreference)
        ):
            await self._room(session, message)
        elif isinstance(message, (wire.WebrtcOffer, wire.WebrtcAnswer, wire.WebrtcIce)):
            await self._webrtc(session, message)
        # Anything else that parses (e.g. a server-to-client type echoed back) is ignored (§2.4).

    async def _feed(self, session: Session, event: flow_.Event) -> None:
        for action in session.flow.handle(event, now_ms()):
            await self._act(session, action)

    async def _act(self, session: Session, action: flow_.Action) -> None:
        if isinstance(action, flow_.ArmTimer):
            session.timers[action.kind] = (action.deadline_ms, action.generation)
            session.timer_wakeup.set()
        elif isinstance(action, flow_.CancelTimer):
            session.timers.pop(action.kind, None)
        elif isinstance(action, flow_.FinalizeUtterance):
            self._queue_dispatch(session, action)
        elif isinstance(action, flow_.InputRejected):
            if action.limit is not None:
                self.metrics.limit_breaches.labels(action.limit).inc()
            if session.draining and action.code == "SESSION_CLOSED":
                self._refused_while_draining(session)
                return
            self._error(session.link, action.code, action.message)

    async def _run_timers(self, session: Session) -> None:
        """One task per session: sleep until the earliest armed timer, feed its event."""
        while not session.closed:
            session.timer_wakeup = anyio.Event()
            if not session.timers:
                await session.timer_wakeup.wait()
                continue
            kind, (deadline, generation) = min(session.timers.items(), key=lambda kv: kv[1][0])
            delay = (deadline - now_ms()) / 1000
            if delay > 0:
                with anyio.move_on_after(delay):
                    await session.timer_wakeup.wait()
                    continue
            if session.timers.get(kind) == (deadline, generation):
                del session.timers[kind]
                await self._feed(session, flow_.TimerFired(kind=kind, generation=generation))

    # -- dispatch --------------------------------------------------------------------------

    def _queue_dispatch(self, session: Session, utterance: flow_.FinalizeUtterance) -> None:
        if len(session.dispatches) >= self.config.dispatch_queue_max:
            self.metrics.jobs.labels("dispatch_queue_full").inc()
            for frame in relay.failure_frames(
                session.session_id,
                new_job_id(),
                utterance.utterance_index,
                "SCHEDULER_DEPENDENCY_DOWN",
                "Too many utterances are waiting to be dispatched: this one was not translated.",
                session.jobs.trace_id,
            ):
                session.link.send(wire.encode(frame))
            return
        session.dispatches.append(utterance)
        session.dispatch_wakeup.set()

    async def _run_dispatches(self, session: Session) -> None:
        """One task per session: dispatch its finalized utterances in order."""
        while not session.closed:
            session.dispatch_wakeup = anyio.Event()
            if not session.dispatches:
                await session.dispatch_wakeup.wait()
            await self._dispatch_queued(session)

    async def _dispatch_queued(self, session: Session) -> None:
        async with session.dispatch_lock:
            while session.dispatches and not session.closed and not session.fenced:
                utterance = session.dispatching = session.dispatches.popleft()
                # Shielded: a dispatch cut short could leave a job the client is never told of.
                with anyio.CancelScope(shield=True):
                    try:
                        targets = await self._targets(session)
                        if not self._too_many_pending(session, utterance, len(targets)):
                            await self.jobs.dispatch_utterance(session.jobs, utterance, targets)
                    finally:
                        session.dispatching = None
                self._progress.set()

    def _too_many_pending(
        self, session: Session, utterance: flow_.FinalizeUtterance, new_jobs: int
    ) -> bool:
        """An utterance whose jobs would take the session past limits.pending_jobs_per_session:
        no job, the client told (``ui_event ERROR``, then ``error``), the breach counted."""
        limit = self.limits.pending_jobs_per_session
        if limits.pending_jobs_within(len(session.jobs.unanswered), new_jobs, limit):
            return False
        self.metrics.limit_breaches.labels("pending_jobs").inc()
        for frame in relay.failure_frames(
            session.session_id,
            new_job_id(),
            utterance.utterance_index,
            limits.PENDING_JOBS_CODE,
            limits.pending_jobs_message(limit),
            session.jobs.trace_id,
        ):
            if isinstance(frame, wire.ErrorMessage):
                self.jobs.tell_error(session.jobs, frame)
            else:
                session.link.send(wire.encode(frame))
        return True

    async def _targets(self, session: Session) -> dict[str, list[str]]:
        own = session.jobs.init.tgt_lang
        if session.room_code:
            code = session.room_code
            try:
                members = await self.jobs.redis_wait.ride_out(
                    "targets", lambda: self.rooms.members(code)
                )
            except RedisUnavailable:
                return {own: [session.session_id]}  # the speaker's own translation at least
            if any(m.session_id == session.session_id for m in members):
                targets = Rooms.target_languages(members, session.session_id, own)
                return self._allowed_targets(session, targets)
            # Expired (and its code maybe taken by a new room of strangers): not ours any more.
            session.jobs.room = None
        return {own: [session.session_id]}

    def _allowed_targets(
        self, session: Session, targets: dict[str, list[str]]
    ) -> dict[str, list[str]]:
        """A room fan-out without the languages the session's token does not allow: no job is
        made for them; each utterance's refusal is counted, and the speaker told (once per
        session.error_repeat_window_ms, as any repeated error)."""
        kept, refused = auth_.allowed_targets(
            session.grant, session.jobs.init, targets, session.session_id
        )
        if refused:
            self.auth.refusals.labels("session", "pair").inc()
            message = (
                "This session's token does not allow translating into "
                f"{', '.join(sorted(refused))}: room members asking for it get no "
                "translation of this utterance."
            )
            self.jobs.tell_error(
                session.jobs, wire.ErrorMessage(code="LANGUAGE_NOT_ALLOWED", message=message)
            )
        return kept

    async def _utterance(self, session: Session, message: wire.Utterance) -> None:
        try:
            audio = base64.b64decode(message.audio, validate=True)
        except (binascii.Error, ValueError):
            self._error(session.link, "INVALID_MESSAGE", "utterance audio is not valid base64")
            return
        await self.jobs.room_activity(session.jobs)
        for action in session.flow.handle(
            flow_.ExplicitUtterance(
                audio=audio, utterance_index=message.utterance_index, manual_cut=message.manual_cut
            ),
            now_ms(),
        ):
            await self._act(session, action)

    # -- deliveries from the runtime ---------------------------------------------------------

    async def deliver(self, envelope: Envelope) -> None:
        """Runtime handler: raising leaves the message pending (retried, then dead-lettered)."""
        session = self.local.get(envelope.target_id)
        if session is None or session.closed:
            raise LookupError(f"session {envelope.target_id} is not connected here")
        delivery = messages.decode_for_session(envelope.kind, envelope.payload)
        if delivery is not None:
            await self.jobs.deliver(session.jobs, delivery, envelope.began_ms)
            self._progress.set()

    async def expire_rooms(self) -> None:
        """Sweep step: expire the rooms idle past ``session.room_idle_ms``; tell each member."""
        for code, members in await self.rooms.expire_due(now_ms()):
            self.metrics.rooms_expired.inc()
            log.info("room expired", extra={"room_code": code, "members": len(members)})
            frame = wire.RoomExpired(room_code=code, message=EXPIRED_MESSAGE)
            for member in members:
                await self.outbox.frame_to_session(member, frame)

    async def fenced_out(self, session_id: str, code: int) -> None:
        """This replica was fenced: the session's unanswered utterances (its buffered audio
        included) will not be finished here. Each gets a ``ui_event ERROR``, the client one
        ``error`` (the browser alerts it), then the socket closes: it reconnects elsewhere."""
        session = self.local.get(session_id)
        if session is None:
            return
        await self._feed(session, flow_.CloseSession())
        # Nothing more is dispatched; a dispatch in flight (a cut that came in with the wake-up)
        # is waited for, so its jobs are among the unanswered ones told below.
        session.fenced = True
        with anyio.move_on_after(self.settings.cleanup_timeout_s):
            await session.dispatch_lock.acquire()
            session.dispatch_lock.release()
        # utterance index -> its job id ("" when not dispatched yet)
        lost = {u.utterance_index: "" for u in session.dispatches}
        if session.dispatching is not None:
            lost[session.dispatching.utterance_index] = ""
        lost.update({index: job_id for job_id, index in session.jobs.unanswered.items()})
        session.dispatches.clear()
        trace_id = session.jobs.trace_id
        for index, job_id in sorted(lost.items()):
            event = wire.ui_event(
                session_id,
                job_id,
                index,
                "ERROR",
                trace_id,
                error_code=FENCED_CODE,
                hint=wire.GENERIC_ERROR_HINT,
            )
            session.link.send(wire.encode(event))
        if lost:
            self._error(
                session.link,
                FENCED_CODE,
                f"The server is restarting: {len(lost)} utterance(s) in progress were not"
                " translated, please repeat them.",
            )
        session.link.close(code, "service restart")

    def evict(self, session_id: str) -> None:
        session = self.local.get(session_id)
        if session is not None:
            session.link.close(CLOSE_POLICY, "session taken over elsewhere")

    async def close_all(self, code: int) -> None:
        for session in list(self.local.values()):
            await self._feed(session, flow_.CloseSession())
            session.link.close(code, "service restart")

    async def drain(self, wait_s: float, code: int) -> None:
        """This replica is draining: no new utterance (each flow closes, its buffered audio
        dispatched as a last one); each session closes (``code``) once every utterance it cut
        is answered, at most ``wait_s`` from now; then the rest are told which utterances were
        not translated (:meth:`fenced_out`) and closed. Runs before the runtime's drain, which
        gives the sessions' ids up: a result arriving after that would be dropped."""
        for session in list(self.local.values()):
            session.draining = True
            await self._feed(session, flow_.CloseSession())
        with anyio.move_on_after(wait_s):
            while True:
                progress = self._progress = anyio.Event()
                busy = False
                for session in list(self.local.values()):
                    if self._answered(session):
                        session.link.close(code, "service restart")
                    else:
                        busy = True
                if not busy:
                    break
                await progress.wait()
        unfinished = [s for s in self.local.values() if not self._answered(s)]
        if unfinished:
            self.metrics.drain_unfinished.labels("session").inc(len(unfinished))
            log.warning("drain: %d session(s) closed with unanswered utterances", len(unfinished))
        for session in list(self.local.values()):
            await self.fenced_out(session.session_id, code)

    @staticmethod
    def _answered(session: Session) -> bool:
        return not (session.dispatches or session.dispatch_lock.locked() or session.jobs.unanswered)

    def _refused_while_draining(self, session: Session) -> None:
        """Audio after a drain closed the flow: told once (the browser alerts each ``error``)
        that what the user says now is not translated; the socket closes 1012 soon."""
        self.metrics.jobs.labels("refused_draining").inc()
        if session.drain_told:
            return
        session.drain_told = True
        index = session.flow.next_utterance_index
        session.link.send(
            wire.encode(
                wire.ui_event(
                    session.session_id,
                    "",
                    index,
                    "ERROR",
                    session.jobs.trace_id,
                    error_code=FENCED_CODE,
                    hint=wire.GENERIC_ERROR_HINT,
                )
            )
        )
        self._error(
            session.link,
            FENCED_CODE,
            "The server is restarting: what you say now is not translated. You will be "
            "reconnected in a moment, please repeat it then.",
        )

    # -- rooms and WebRTC --------------------------------------------------------------------

    async def _room(
        self,
        session: Session,
        message: wire.RoomCreate | wire.RoomJoin | wire.RoomLeave | wire.RoomRawVoicePreference,
    ) -> None:
        rooms = self.rooms
        try:
            if self._room_limit_reached(session, message):
                return
            if isinstance(message, wire.RoomCreate):
                if session.room_code:
                    await self._leave_room(session)
                me = rooms.participant(
                    session.session_id, message.display_name, message.preferred_lang
                )
                code, room_id = await rooms.create(me)
                session.rooms_entered += 1
                session.jobs.room = self._presence(code)
                session.link.send(wire.encode(wire.RoomCreateAck(room_code=code, room_id=room_id)))
                await self._broadcast_members(code, [me])
            elif isinstance(message, wire.RoomJoin):
                if session.room_code and session.room_code != message.room_code:
                    await self._leave_room(session)
                me = rooms.participant(
                    session.session_id, message.display_name, message.preferred_lang
                )
                entering = session.room_code != message.room_code
                members = await rooms.join(message.room_code, me)
                session.rooms_entered += entering
                session.jobs.room = self._presence(message.room_code)
                await self._broadcast_members(message.room_code, members)
            elif isinstance(message, wire.RoomLeave):
                if session.room_code == message.room_code:
                    await self._leave_room(session)
            elif isinstance(message, wire.RoomRawVoicePreference):
                members = await rooms.set_raw_voice(
                    message.room_code,
                    session.session_id,
                    message.target_session_id,
                    message.receive_raw_voice,
                )
                await self._broadcast_members(message.room_code, members)
        except RoomError as exc:
            if isinstance(exc, RoomFull):
                self.metrics.limit_breaches.labels("room_members").inc()
            session.link.send(wire.encode(wire.RoomError(code=exc.code, message=exc.message)))

    def _room_limit_reached(self, session: Session, message: wire.ClientMessage) -> bool:
        """A create or a join of another room past limits.rooms_per_session: refused, counted."""
        entering = isinstance(message, wire.RoomCreate) or (
            isinstance(message, wire.RoomJoin) and message.room_code != session.room_code
        )
        limit = self.limits.rooms_per_session
        if not entering or session.rooms_entered < limit:
            return False
        self.metrics.limit_breaches.labels("rooms_per_session").inc()
        refusal = wire.RoomError(
            code=limits.ROOM_LIMIT_CODE, message=limits.room_limit_message(limit)
        )
        session.link.send(wire.encode(refusal))
        return True

    def _presence(self, code: str) -> RoomPresence:
        # Created, joined or updated just now: the script already pushed the deadline back.
        presence = RoomPresence(code, self.config.room_touch_interval_ms)
        presence.touch_due(now_ms())
        return presence

    async def _leave_room(self, session: Session) -> None:
        code, session.jobs.room = session.room_code, None
        if code:
            remaining = await self.rooms.leave(code, session.session_id)
            await self._broadcast_members(code, remaining)

    async def _broadcast_members(self, code: str, members: list[Participant]) -> None:
        frame = wire.RoomMembers(room_code=code, members=[msgspec.to_builtins(m) for m in members])
        for member in members:
            await self.outbox.frame_to_session(member.session_id, frame)

    async def _webrtc(
        self, session: Session, message: wire.WebrtcOffer | wire.WebrtcAnswer | wire.WebrtcIce
    ) -> None:
        members = await self.rooms.members(message.room_code)
        ids = {m.session_id for m in members}
        if session.session_id not in ids or message.to not in ids:
            return
        if not Rooms.accepts_raw_voice(members, receiver=message.to, sender=session.session_id):
            return
        # On delivery `to` carries the sender's id (§2.5).
        await self.outbox.frame_to_session(
            message.to, msgspec.structs.replace(message, to=session.session_id)
        )
        if session.room_code == message.room_code:
            await self.jobs.room_activity(session.jobs)
