"""Frames built from scheduler state: what a node is told, what a client is told.

No I/O and no clock: every function takes what it needs (``now_ms`` included) and returns
messages of :mod:`scheduler.protocol`; the gateways encode and send them. The protocol is written
in ``docs/protocol.md``; the § numbers are the original protocol's sections.

* :func:`job_assign` — an utterance (:class:`JobSpec`) as the ``job_assign`` the Electron node
  relies on (§2.3, §6.2).
* :class:`ResultRelay` — one per session: a node's ``job_result`` as the frames the browser gets
  (§3.8): deduplicated per job id, empty acknowledgements swallowed, failures as ``ui_event
  ERROR`` plus ``error``, all-empty results as ``missing_result``, TTS group ids assigned.
* :func:`partial_frames`, :func:`failure_frames`, :func:`dispatched_event`,
  :func:`session_init_ack` — the other session frames.
* :class:`ErrorThrottle` — one per session: whether an ``error`` frame is sent or suppressed as a
  repeat (the browser ``alert()``s every one).
"""

from __future__ import annotations

import base64
from collections import OrderedDict

import msgspec

from scheduler import protocol as wire
from scheduler.config import SessionConfig
from scheduler.scheduling.types import FinalizeReason

__all__ = [
    "EMPTY_ACK_REASONS",
    "ErrorThrottle",
    "Frame",
    "JobSpec",
    "ResultRelay",
    "dispatched_event",
    "failure_frames",
    "job_assign",
    "partial_frames",
    "session_init_ack",
]

Frame = wire.ServerMessage

# `extra.reason` of a node's empty acknowledgement (§2.2): nothing recognized, or the job's
# audio was merged into a later job of its turn. The client gets nothing for them (§3.8 step 5).
EMPTY_ACK_REASONS = frozenset({"ASR_EMPTY", "NO_TEXT_ASSIGNED"})

# The finalize flag the node reads for each reason (§3.3 table); "size" and "close" carry none.
# `is_pause_triggered` exists on the wire but the original never sets it: silence is a timeout.
_REASON_FLAG: dict[str, str | None] = {
    "manual": "is_manual_cut",
    "silence": "is_timeout_triggered",
    "max_duration": "is_max_duration_triggered",
    "size": None,
    "close": None,
}
# The streaming path's fixed pipeline: the original forces it whatever the client asks (§3.5).
_PIPELINE = wire.PipelineConfig(
    use_asr=True, use_nmt=True, use_tts=True, use_semantic=False, use_tone=False
)
# What the session's ack announces: the browser encodes Plan-A Opus 16 kHz mono whatever it is
# told, and `use_binary_frame: true` would switch it to a frame protocol we do not speak (§6.1).
_CODEC = "opus"
_SAMPLE_RATE = 16000
_PROTOCOL_VERSION = "1.0"
_NO_ERROR_DETAILS = "This utterance could not be translated. Please try again."


class JobSpec(msgspec.Struct, kw_only=True, frozen=True):
    """One utterance for one target language, as the session flow finalized it."""

    job_id: str
    session_id: str
    utterance_index: int
    src_lang: str
    tgt_lang: str
    init: wire.SessionInit  # the session's init: dialect, features, mode, two-way languages
    audio: bytes
    trace_id: str
    turn_id: str
    reason: FinalizeReason
    padding_ms: int
    attempt_id: int = 1  # the dispatch's attempt replaces it once the core has chosen a node
    finalized_ms: int = 0  # when the flow finalized it (the latency metrics measure from it)
    audio_format: str = _CODEC
    sample_rate: int = _SAMPLE_RATE


def job_assign(spec: JobSpec, config: SessionConfig | None = None) -> wire.JobAssign:
    """The ``job_assign`` for ``spec``; ``config`` (default: the defaults) sets the partial
    interval. Raises ValueError for an unknown reason or empty audio (never sent, §2.3)."""
    if spec.reason not in _REASON_FLAG:
        raise ValueError(f"unknown finalize reason {spec.reason!r}")
    if not spec.audio:
        raise ValueError(f"job {spec.job_id}: empty audio is never sent to a node")
    if spec.attempt_id < 1:
        raise ValueError(f"job {spec.job_id}: attempt_id must be >= 1, got {spec.attempt_id}")
    session = config or SessionConfig()
    flag = _REASON_FLAG[spec.reason]
    init = spec.init
    return wire.JobAssign(
        job_id=spec.job_id,
        attempt_id=spec.attempt_id,
        session_id=spec.session_id,
        utterance_index=spec.utterance_index,
        src_lang=spec.src_lang,
        tgt_lang=spec.tgt_lang,
        dialect=init.dialect,
        features=init.features,
        pipeline=_PIPELINE,
        audio=base64.b64encode(spec.audio).decode("ascii"),
        audio_format=spec.audio_format,
        sample_rate=spec.sample_rate,
        mode=init.mode,
        lang_a=init.lang_a,
        lang_b=init.lang_b,
        auto_langs=init.auto_langs,
        # The original always sends true; a client that explicitly declined partials is heard.
        enable_streaming_asr=init.enable_streaming_asr is not False,
        partial_update_interval_ms=session.partial_update_interval_ms,
        trace_id=spec.trace_id,
        padding_ms=spec.padding_ms,
        is_manual_cut=flag == "is_manual_cut",
        is_timeout_triggered=flag == "is_timeout_triggered",
        is_max_duration_triggered=flag == "is_max_duration_triggered",
        turn_id=spec.turn_id,
    )


class _Group(msgspec.Struct):
    """The session's active TTS group: results close together share a ``group_id``."""

    group_id: str
    anchor_ms: int  # creation, then each tts_play_ended (server clock)
    next_part: int = 0


class ResultRelay:
    """Turns one session's ``job_result`` messages into client frames (§3.8, §6.3 item 6).

    Keeps per session: the job ids already relayed (at most ``session.result_dedup_max``, oldest
    forgotten first) and the active TTS group. Call :meth:`on_tts_ended` on ``tts_play_ended`` so
    results that follow playback closely join its group, and :meth:`close` when the session ends.
    """

    def __init__(self, config: SessionConfig, session_id: str) -> None:
        self.config = config
        self.session_id = session_id
        # job id -> whether what was relayed was complete (an empty one may still be replaced)
        self._seen: OrderedDict[str, bool] = OrderedDict()
        self._group: _Group | None = None

    def __repr__(self) -> str:
        group = self._group.group_id if self._group else "-"
        return f"<ResultRelay {self.session_id} seen={len(self._seen)} group={group}>"

    def on_result(self, result: wire.JobResult, now_ms: int) -> list[Frame]:
        """The frames for ``result`` (maybe none), in sending order."""
        text_asr = result.text_asr or ""
        text_translated = result.text_translated or ""
        tts_audio = result.tts_audio or ""
        reason = result.extra.reason if result.extra is not None else None
        is_empty_ack = reason in EMPTY_ACK_REASONS
        complete = not is_empty_ack and bool(text_asr.strip())
        if not self._first_delivery(result.job_id, complete):
            return []
        if not result.success:
            return self._failure(result)
        if is_empty_ack:
            return []
        frames: list[Frame] = []
        group_id: str | None = None
        part_index: int | None = None
        if text_asr:
            group_id, part_index = self._next_part(now_ms)
            frames.append(self._event(result, "ASR_FINAL"))
        if text_translated:
            frames.append(self._event(result, "NMT_DONE"))
        if not (text_asr or text_translated or tts_audio):
            frames.append(
                wire.MissingResult(
                    session_id=self.session_id,
                    utterance_index=result.utterance_index,
                    reason="silence_detected",
                    created_at_ms=now_ms,
                    trace_id=result.trace_id,
                )
            )
            return frames
        frames.append(
            wire.TranslationResult(
                session_id=self.session_id,
                utterance_index=result.utterance_index,
                job_id=result.job_id,
                text_asr=text_asr,
                text_translated=text_translated,
                tts_audio=tts_audio,
                tts_format=result.tts_format or "pcm16",
                extra=result.extra,
                trace_id=result.trace_id,
                group_id=group_id,
                part_index=part_index,
                service_timings=_service_timings(result),
                scheduler_sent_at_ms=now_ms,
                asr_quality_level=result.asr_quality_level,
                reason_codes=result.reason_codes,
                quality_score=result.quality_score,
                rerun_count=result.rerun_count,
                segments_meta=result.segments_meta,
            )
        )
        return frames

    def on_tts_ended(self, group_id: str, now_ms: int) -> None:
        """The client finished playing ``group_id``: the group's window restarts at ``now_ms``.

        Server time, not the client's ``ts_end_ms``: the original compared the two clocks (§7.12).
        """
        if self._group is not None and self._group.group_id == group_id:
            self._group.anchor_ms = now_ms

    def close(self) -> None:
        """The session ended: the next result (if any) starts a new group."""
        self._group = None

    # -- internals ---------------------------------------------------------------------------

    def _first_delivery(self, job_id: str, complete: bool) -> bool:
        """Record ``job_id``; False for a repeat, except a complete result after an empty one."""
        earlier = self._seen.get(job_id)
        if earlier is not None and (earlier or not complete):
            return False
        self._seen[job_id] = complete
        self._seen.move_to_end(job_id)
        while len(self._seen) > self.config.result_dedup_max:
            self._seen.popitem(last=False)
        return True

    def _next_part(self, now_ms: int) -> tuple[str, int]:
        group = self._group
        if group is None or now_ms - group.anchor_ms > self.config.result_group_window_ms:
            group = self._group = _Group(
                group_id=f"group_{self.session_id}_{now_ms}", anchor_ms=now_ms
            )
        part = group.next_part
        group.next_part += 1
        return group.group_id, part

    def _event(self, result: wire.JobResult, event: str) -> wire.UiEvent:
        return wire.ui_event(
            self.session_id, result.job_id, result.utterance_index, event, result.trace_id
        )

    def _failure(self, result: wire.JobResult) -> list[Frame]:
        error = result.error
        code = error.code if error is not None else None
        # ui_event.error_code names only the original's ErrorCode values (§3.8 step 8).
        known = code if code in wire.ERROR_CODES else None
        event = wire.ui_event(
            self.session_id,
            result.job_id,
            result.utterance_index,
            "ERROR",
            result.trace_id,
            error_code=known,
            hint=wire.GENERIC_ERROR_HINT if known else None,
        )
        if error is None:
            # The original sent no `error` here, leaving the utterance unanswered (§7.1).
            return [event, wire.ErrorMessage(code="PROCESSING_ERROR", message=_NO_ERROR_DETAILS)]
        return [
            event,
            wire.ErrorMessage(code=error.code, message=error.message, details=error.details),
        ]


class ErrorThrottle:
    """Per session: an ``error`` with the code of one sent less than ``window_ms`` ago is a
    repeat, not sent (with no node, every utterance would otherwise pop up the same alert).

    Remembers only the codes sent within the window, so it stays as small as the burst.
    """

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._sent_at: dict[str, int] = {}

    def allow(self, code: str, now_ms: int) -> bool:
        """True: send it (and start the code's window at ``now_ms``); False: a repeat."""
        self._sent_at = {c: t for c, t in self._sent_at.items() if now_ms - t < self.window_ms}
        if code in self._sent_at:
            return False
        if self.window_ms > 0:
            self._sent_at[code] = now_ms
        return True


def _service_timings(result: wire.JobResult) -> wire.ServiceTimings | None:
    """The node's ``extra.service_timings``, else ``{"total_ms": processing_time_ms}`` (§2.5)."""
    if result.extra is not None and result.extra.service_timings is not None:
        return result.extra.service_timings
    if result.processing_time_ms is not None:
        return wire.ServiceTimings(total_ms=result.processing_time_ms)
    return None


def partial_frames(partial: wire.NodeAsrPartial) -> list[Frame]:
    """A node's ``asr_partial`` for the client: the subtitle, then ``ui_event ASR_PARTIAL``.

    Both carry ``job_id: ""``, as the original's (§2.5, §3.8).
    """
    return [
        wire.AsrPartial(
            session_id=partial.session_id,
            utterance_index=partial.utterance_index,
            job_id="",
            text=partial.text,
            is_final=partial.is_final,
            trace_id=partial.trace_id,
        ),
        wire.ui_event(
            partial.session_id, "", partial.utterance_index, "ASR_PARTIAL", partial.trace_id
        ),
    ]


def failure_frames(
    session_id: str,
    job_id: str,
    utterance_index: int,
    code: str,
    message: str,
    trace_id: str,
) -> list[Frame]:
    """A job that ends without a result: ``ui_event ERROR`` (with ``error_code``), then
    ``error{code, message}``, so the browser is told (the original often told it nothing, §7.16)."""
    return [
        wire.ui_event(
            session_id,
            job_id,
            utterance_index,
            "ERROR",
            trace_id,
            error_code=code,
            hint=wire.GENERIC_ERROR_HINT,
        ),
        wire.ErrorMessage(code=code, message=message),
    ]


def dispatched_event(
    session_id: str, job_id: str, utterance_index: int, trace_id: str
) -> wire.UiEvent:
    """``ui_event DISPATCHED``: the job is on its way to a node (§3.7)."""
    return wire.ui_event(session_id, job_id, utterance_index, "DISPATCHED", trace_id)


def session_init_ack(session_id: str, trace_id: str) -> wire.SessionInitAck:
    """The answer to ``session_init`` (§2.5, §6.3 item 2); no pairing, so no assigned node."""
    return wire.SessionInitAck(
        session_id=session_id,
        message="session created",
        trace_id=trace_id,
        protocol_version=_PROTOCOL_VERSION,
        use_binary_frame=False,
        negotiated_codec=_CODEC,
        negotiated_audio_format=_CODEC,
        negotiated_sample_rate=_SAMPLE_RATE,
        negotiated_channel_count=1,
    )
