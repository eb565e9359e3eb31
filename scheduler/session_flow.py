"""The session flow: when a client's audio becomes an utterance (docs/protocol.md; the original's §3.2-3.6).

A pure state machine, in the shape of websockets' ``Protocol``: the gateway feeds it events with
the current time, ``SessionFlow.handle(event, now_ms)``, and carries out the actions it returns.
It does no I/O and reads no clock, so the same events at the same times give the same actions.

Timers belong to the caller. ``ArmTimer(kind, deadline_ms, generation)`` replaces any timer of
that kind; when the deadline passes, the caller feeds ``TimerFired(kind, generation)``. A fired
timer whose generation is not the latest is ignored, and so is one fired before its deadline
(it is armed again). The machine also expires its timer against ``now_ms`` on every event, at
the timer's own deadline, so a late timer gives the same result as a punctual one: a chunk that
arrives after the silence deadline finds the previous utterance already cut. That is the
reference's "gap" rule (§3.3); its TTS exemption only mattered when the timer had not fired, and
the timer variant was never exempt, so there is nothing left to exempt.

Rules, after the reference and where we depart from it:

* Audio chunks accumulate. An utterance is finalized on ``is_final`` ("manual"), on ``pause_ms``
  without a non-empty chunk ("silence"), when its estimated duration reaches ``max_duration_ms``
  ("max_duration"), before it would exceed ``max_utterance_bytes`` ("size"), and on close
  ("close"). Precedence within one chunk is the reference's: size > manual > max_duration.
* Manual, silence and max-duration cuts wait their hangover; audio arriving meanwhile joins the
  utterance (the original only delayed the cut, §3.3). A chunk that would overflow the utterance
  ends the hangover at once. Size cuts and close flush at once.
* The gap rule of the original put the first chunk of the *new* utterance into the previous one
  (§7.6); here the late chunk joins only while the silence cut's hangover is still open.
* ``tts_started`` holds the silence timer (at most ``tts_hold_max_ms``), ``tts_play_ended``
  restarts it, and each non-empty chunk restarts it, as in the original. ``ts_end_ms`` is the
  client's clock and is not mixed with ours (§7.12).
* ``utterance_index`` is dense from 0 and shared by both paths, so no index is ever sent twice
  (the original's two counters collided, §3.4). An explicit ``utterance`` message is released in
  the order of the client's own index, starting at 0, and takes the next index; one that waits
  for a missing lower index is held (at most ``max_held_utterances``), and close releases it.
  An empty one takes its client slot but no index. ``manual_cut: false`` is sent as a silence
  cut, not flag-less: an explicit utterance is complete and the node must flush it (§4.3).
* ``turn_id``: max-duration and size cuts keep the turn, every other finalize ends it (§3.6). An
  explicit utterance has a turn of its own; an empty cut changes nothing. Ids are UUID-formatted
  like the original's, derived from a random per-flow seed so that ``handle`` stays deterministic.
* Nothing empty is dispatched, nothing is dropped silently, and the machine never goes deaf:
  after any finalize the next chunk starts a new utterance (§7.2, §7.3).
"""

from __future__ import annotations

import enum
import logging
import struct
import uuid
from typing import TypeAlias

import msgspec

from scheduler.config import SessionConfig
from scheduler.limits import Limit
from scheduler.scheduling.types import FinalizeReason

__all__ = [
    "Action",
    "ArmTimer",
    "AudioReceived",
    "CancelTimer",
    "CloseSession",
    "Event",
    "ExplicitUtterance",
    "FinalizeUtterance",
    "InputRejected",
    "SessionFlow",
    "SessionParams",
    "SessionState",
    "TimerFired",
    "TtsPlaybackEnded",
    "TtsPlaybackStarted",
    "estimate_duration_us",
]

log = logging.getLogger("lingua.session.flow")

AUDIO_FORMATS = ("opus", "pcm16")
SILENCE_TIMER = "silence"
HANGOVER_TIMER = "hangover"
# Cuts that continue the turn (§3.6): the node keeps merging the turn's audio.
TURN_KEEPING = frozenset({"max_duration", "size"})


# -- parameters ----------------------------------------------------------------------------


class SessionParams(msgspec.Struct, frozen=True, kw_only=True):
    """What one session's flow needs from its ``session_init``."""

    audio_format: str = "opus"
    sample_rate: int = 16000
    mode: str = "one_way"
    enable_streaming_asr: bool = True

    def __post_init__(self) -> None:
        if self.audio_format not in AUDIO_FORMATS:
            raise ValueError(
                f"audio_format must be one of {AUDIO_FORMATS}, got {self.audio_format!r}"
            )
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    @classmethod
    def from_init(cls, init: object) -> SessionParams:
        """Read a ``session_init`` by attribute; absent, ``null`` or unusable values take defaults.

        The browser never sends a format: the original fixed opus/16000 whatever the client said
        (§3.1), so a value we cannot estimate durations for is not an error, just ignored.
        """
        audio_format = getattr(init, "audio_format", None)
        sample_rate = getattr(init, "sample_rate", None)
        mode = getattr(init, "mode", None)
        streaming = getattr(init, "enable_streaming_asr", None)
        return cls(
            audio_format=audio_format if audio_format in AUDIO_FORMATS else "opus",
            sample_rate=(
                sample_rate
                if isinstance(sample_rate, int)
                and not isinstance(sample_rate, bool)
                and sample_rate > 0
                else 16000
            ),
            mode=mode if isinstance(mode, str) and mode else "one_way",
            enable_streaming_asr=streaming if isinstance(streaming, bool) else True,
        )


# -- events --------------------------------------------------------------------------------


class AudioReceived(msgspec.Struct, frozen=True):
    """An ``audio_chunk``: its decoded payload (may be empty) and its ``is_final`` flag."""

    audio: bytes
    is_final: bool = False


class CloseSession(msgspec.Struct, frozen=True):
    """``session_close`` or shutdown: flush what is buffered, then refuse audio."""


class TtsPlaybackStarted(msgspec.Struct, frozen=True):
    """``tts_started``: the client plays a result; the silence timer is held."""


class TtsPlaybackEnded(msgspec.Struct, frozen=True):
    """``tts_play_ended``: playback is over; the silence timer restarts."""

    ts_end_ms: int | None = None


class ExplicitUtterance(msgspec.Struct, frozen=True):
    """An ``utterance`` message: one complete utterance numbered by the client."""

    audio: bytes
    utterance_index: int
    manual_cut: bool = True


class TimerFired(msgspec.Struct, frozen=True):
    """A timer armed by ``ArmTimer`` reached its deadline."""

    kind: str
    generation: int


Event: TypeAlias = (
    AudioReceived
    | CloseSession
    | TtsPlaybackStarted
    | TtsPlaybackEnded
    | ExplicitUtterance
    | TimerFired
)


# -- actions -------------------------------------------------------------------------------


class ArmTimer(msgspec.Struct, frozen=True):
    """Feed ``TimerFired(kind, generation)`` at ``deadline_ms``; replaces a timer of this kind."""

    kind: str
    deadline_ms: int
    generation: int


class CancelTimer(msgspec.Struct, frozen=True):
    """Forget the timer of this kind, if any."""

    kind: str


class FinalizeUtterance(msgspec.Struct, frozen=True):
    """Dispatch this utterance: one job per target language, all with this index and turn."""

    utterance_index: int
    audio: bytes
    reason: FinalizeReason
    turn_id: str
    padding_ms: int
    finalized_ms: int = 0  # the ``now`` it was decided at: latencies are measured from it


class InputRejected(msgspec.Struct, frozen=True):
    """Tell the client ``error{code, message}``; the input changed nothing."""

    code: str
    message: str
    limit: Limit | None = None  # the limit the input broke (lingua_limit_breaches_total)


Action: TypeAlias = ArmTimer | CancelTimer | FinalizeUtterance | InputRejected


# -- the machine ---------------------------------------------------------------------------


class SessionState(enum.IntEnum):
    IDLE = 0  # nothing buffered
    SPEAKING = 1  # audio buffered; the silence timer runs (unless pause_ms is 0)
    HANGOVER = 2  # a cut is decided; audio still joins until the hangover timer fires
    CLOSED = 3  # flushed; audio is refused


IDLE = SessionState.IDLE
SPEAKING = SessionState.SPEAKING
HANGOVER = SessionState.HANGOVER
CLOSED = SessionState.CLOSED


class _Timer(msgspec.Struct, frozen=True):
    kind: str
    deadline_ms: int
    generation: int


def estimate_duration_us(audio: bytes, params: SessionParams, config: SessionConfig) -> int:
    """Estimated playing time of ``audio`` in microseconds (for the max-duration cut).

    pcm16 is exact. Opus counts Plan-A packets (``[u16 LE length][packet]``, one per
    ``opus_frame_ms``) when the chunk is cleanly framed, as the browser's are; otherwise it
    falls back to a byte rate, like the original's ``len/60*20`` (§7.17).
    """
    if params.audio_format == "pcm16":
        return (len(audio) // 2) * 1_000_000 // params.sample_rate
    packets, offset, size = 0, 0, len(audio)
    while offset + 2 <= size:
        (length,) = struct.unpack_from("<H", audio, offset)
        offset += 2 + length
        packets += 1
    if packets and offset == size:
        return packets * config.opus_frame_ms * 1000
    return size * 1_000_000 // config.opus_bytes_per_second


class SessionFlow:
    """One session's utterance segmentation; see the module docstring for the rules."""

    def __init__(
        self, config: SessionConfig, params: SessionParams, *, turn_seed: uuid.UUID | None = None
    ) -> None:
        self.config = config
        self.params = params
        self._state = IDLE
        self._buffer = bytearray()
        self._duration_us = 0
        self._pending_reason: FinalizeReason | None = None  # set in HANGOVER
        self._timer: _Timer | None = None
        self._generation = 0
        self._now = 0  # highest now_ms seen: the caller's wall clock may step back
        self._next_index = 0
        # Turn ids are derived, not drawn, so the machine stays deterministic; the random seed
        # makes them unique across sessions (a node merges audio by turn id, §3.6).
        self._turn_seed = turn_seed or uuid.uuid4()
        self._turns_made = 0
        self._turn_id: str | None = None
        self._explicit_next = 0  # the client's next utterance_index on the explicit path
        self._held: dict[int, ExplicitUtterance] = {}

    def __repr__(self) -> str:
        return (
            f"<SessionFlow {self._state.name} index={self._next_index} "
            f"buffered={len(self._buffer)}B held={len(self._held)}>"
        )

    # -- inspection (tests, logs) ----------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @state.setter
    def state(self, value: SessionState) -> None:
        if value is not self._state:
            log.debug("= %s -> %s", self._state.name, value.name)
            self._state = value

    @property
    def next_utterance_index(self) -> int:
        return self._next_index

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    @property
    def held_utterances(self) -> int:
        return len(self._held)

    # -- input -----------------------------------------------------------------------------

    def handle(self, event: Event, now_ms: int) -> list[Action]:
        """Apply ``event`` at ``now_ms``; return the actions to carry out, in order."""
        now = max(now_ms, self._now)
        if self._state is CLOSED:
            if isinstance(event, (AudioReceived, ExplicitUtterance)):
                return [InputRejected("SESSION_CLOSED", "The session is closed")]
            return []
        rejection = self._check(event)
        if rejection is not None:
            return [rejection]
        self._now = now
        armed = self._timer
        if isinstance(event, TimerFired) and armed is not None:
            if (armed.kind, armed.generation) == (event.kind, event.generation):
                armed = None  # the caller dropped the timer it fired
        actions: list[Action] = []
        self._apply(event, now, actions)
        return self._net_timers(armed, actions)

    def _apply(self, event: Event, now: int, actions: list[Action]) -> None:
        if isinstance(event, TimerFired):
            self._timer_fired(event, now, actions)
            return
        self._catch_up(now, actions)
        if isinstance(event, AudioReceived):
            self._audio(event, now, actions)
        elif isinstance(event, ExplicitUtterance):
            self._explicit(event, actions)
        elif isinstance(event, TtsPlaybackStarted):
            if self._state is SPEAKING and self.config.pause_ms > 0:
                hold = self.config.tts_hold_max_ms + self.config.pause_ms
                self._arm(SILENCE_TIMER, now + hold)
        elif isinstance(event, TtsPlaybackEnded):
            if self._state is SPEAKING and self.config.pause_ms > 0:
                self._arm(SILENCE_TIMER, now + self.config.pause_ms)
        elif isinstance(event, CloseSession):
            self._close(actions)
        else:
            raise AssertionError(f"unknown event {event!r}")

    def _net_timers(self, armed: _Timer | None, actions: list[Action]) -> list[Action]:
        """Replace the timer steps taken inside one event by their net effect, placed first.

        Catching up can arm a timer whose deadline has already passed and expire it at once;
        the caller only needs to know which timer is armed now.
        """
        out: list[Action] = []
        final = self._timer
        if armed is not None and armed != final and (final is None or final.kind != armed.kind):
            out.append(CancelTimer(armed.kind))
        if final is not None and final != armed:
            out.append(ArmTimer(final.kind, final.deadline_ms, final.generation))
        return out + actions

    def _check(self, event: Event) -> InputRejected | None:
        """Refuse input that breaks a bound, before anything changes."""
        limit = self.config.max_utterance_bytes
        if isinstance(event, AudioReceived) and len(event.audio) > limit:
            return InputRejected(
                "INVALID_MESSAGE",
                f"This audio_chunk of {len(event.audio)} bytes is more than one utterance may "
                f"hold (max_utterance_bytes: {limit}), so it was not used.",
                "utterance_bytes",
            )
        if isinstance(event, ExplicitUtterance):
            index = event.utterance_index
            if len(event.audio) > limit:
                return InputRejected(
                    "INVALID_MESSAGE",
                    f"This utterance of {len(event.audio)} bytes is more than one utterance may "
                    f"hold (max_utterance_bytes: {limit}), so it was not used.",
                    "utterance_bytes",
                )
            if index < 0:
                return InputRejected("INVALID_MESSAGE", f"utterance_index {index} is negative")
            if index < self._explicit_next or index in self._held:
                return InputRejected(
                    "INVALID_MESSAGE", f"utterance_index {index} was already received"
                )
            ahead = self.config.max_held_utterances
            if index > self._explicit_next + ahead:
                return InputRejected(
                    "INVALID_MESSAGE",
                    f"utterance_index {index} is more than {ahead} ahead of the next expected "
                    f"({self._explicit_next})",
                )
        return None

    # -- streaming audio -------------------------------------------------------------------

    def _audio(self, event: AudioReceived, now: int, actions: list[Action]) -> None:
        audio = event.audio
        if audio:
            full = len(self._buffer) + len(audio) > self.config.max_utterance_bytes
            if self._state is HANGOVER:
                if full:  # the hangover ends here; this chunk starts the next utterance
                    self._finalize(self._pending_reason_or_fail(), actions)
                else:
                    self._append(audio)
                    if self._duration_reached():
                        self._finalize(self._pending_reason_or_fail(), actions)
                    audio = b""
            if audio:
                if self._state is SPEAKING and full:
                    self._finalize("size", actions)
                self._append(audio)
                self.state = SPEAKING
                # With is_final, the manual cut below outranks max_duration and silence.
                if not event.is_final and self._duration_reached():
                    self._begin_cut("max_duration", now, actions)
                elif not event.is_final and self.config.pause_ms > 0:
                    self._arm(SILENCE_TIMER, now + self.config.pause_ms)
        if event.is_final:
            if self._state is SPEAKING:
                self._begin_cut("manual", now, actions)
            elif self._state is HANGOVER and self._pending_reason != "manual":
                # The user's cut outranks an automatic one (and ends the turn); never later.
                self._pending_reason = "manual"
                deadline = now + self.config.hangover_manual_ms
                assert self._timer is not None, "HANGOVER without its timer"
                if deadline <= now:
                    self._finalize("manual", actions)
                elif deadline < self._timer.deadline_ms:
                    self._arm(HANGOVER_TIMER, deadline)

    def _append(self, audio: bytes) -> None:
        self._buffer += audio
        self._duration_us += estimate_duration_us(audio, self.params, self.config)

    def _duration_reached(self) -> bool:
        return self._duration_us >= self.config.max_duration_ms * 1000

    def _pending_reason_or_fail(self) -> FinalizeReason:
        assert self._pending_reason is not None, "HANGOVER without a reason"
        return self._pending_reason

    # -- cuts ------------------------------------------------------------------------------

    def _begin_cut(self, reason: FinalizeReason, at: int, actions: list[Action]) -> None:
        """Decide to finalize: now, or after the reason's hangover."""
        hangover = (
            self.config.hangover_manual_ms if reason == "manual" else self.config.hangover_auto_ms
        )
        if hangover <= 0:
            self._finalize(reason, actions)
            return
        self._pending_reason = reason
        self.state = HANGOVER
        self._arm(HANGOVER_TIMER, at + hangover)

    def _finalize(self, reason: FinalizeReason, actions: list[Action]) -> None:
        """Cut the buffered utterance: one ``FinalizeUtterance`` unless it is empty."""
        audio = bytes(self._buffer)
        self._buffer.clear()
        self._duration_us = 0
        self._pending_reason = None
        self._disarm()
        self.state = IDLE
        if not audio:  # an empty cut consumes no index and keeps the turn (§3.4)
            return
        turn_id = self._turn_id or self._new_turn_id()
        padding = {
            "manual": self.config.padding_manual_ms,
            "size": 0,
        }.get(reason, self.config.padding_auto_ms)
        actions.append(
            FinalizeUtterance(self._next_index, audio, reason, turn_id, padding, self._now)
        )
        self._next_index += 1
        self._turn_id = turn_id if reason in TURN_KEEPING else None

    def _new_turn_id(self) -> str:
        self._turns_made += 1
        return str(uuid.uuid5(self._turn_seed, str(self._turns_made)))

    # -- timers ----------------------------------------------------------------------------

    # One timer at most is armed; ``handle`` reports the net change as ArmTimer / CancelTimer.

    def _arm(self, kind: str, deadline: int) -> None:
        self._generation += 1
        self._timer = _Timer(kind, deadline, self._generation)

    def _disarm(self) -> None:
        self._timer = None

    def _timer_fired(self, event: TimerFired, now: int, actions: list[Action]) -> None:
        timer = self._timer
        if timer is None or (timer.kind, timer.generation) != (event.kind, event.generation):
            return  # stale: superseded or cancelled since it was armed
        if now < timer.deadline_ms:
            return  # early: the timer stays armed and fires (or is caught up) later
        self._timer = None
        self._expire(timer, timer.deadline_ms, actions)
        self._catch_up(now, actions)  # a late event: the timer it armed may be due already

    def _catch_up(self, now: int, actions: list[Action]) -> None:
        """Expire a timer whose deadline passed before its ``TimerFired`` arrived."""
        while self._timer is not None and self._timer.deadline_ms <= now:
            timer, self._timer = self._timer, None
            self._expire(timer, timer.deadline_ms, actions)

    def _expire(self, timer: _Timer, at: int, actions: list[Action]) -> None:
        if timer.kind == SILENCE_TIMER and self._state is SPEAKING:
            self._begin_cut("silence", at, actions)
        elif timer.kind == HANGOVER_TIMER and self._state is HANGOVER:
            self._finalize(self._pending_reason_or_fail(), actions)

    # -- explicit utterances and close -----------------------------------------------------

    def _explicit(self, event: ExplicitUtterance, actions: list[Action]) -> None:
        self._held[event.utterance_index] = event
        while self._explicit_next in self._held:
            self._release(self._held.pop(self._explicit_next), actions)
            self._explicit_next += 1

    def _release(self, event: ExplicitUtterance, actions: list[Action]) -> None:
        if not event.audio:
            return
        # An explicit utterance is complete: it must flush on the node, so it is never a
        # flag-less job (§4.3); no hangover or padding (§3.11).
        reason: FinalizeReason = "manual" if event.manual_cut else "silence"
        actions.append(
            FinalizeUtterance(
                self._next_index, bytes(event.audio), reason, self._new_turn_id(), 0, self._now
            )
        )
        self._next_index += 1

    def _close(self, actions: list[Action]) -> None:
        if self._state is HANGOVER:
            self._finalize(self._pending_reason_or_fail(), actions)
        else:
            self._finalize("close", actions)
        # Held utterances wait for an index that can no longer come: release them in order.
        for index in sorted(self._held):
            self._release(self._held.pop(index), actions)
        self._disarm()
        self.state = CLOSED
