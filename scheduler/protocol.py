"""The wire protocol of ``/ws/session`` and ``/ws/node`` (docs/protocol.md; the original's §2).

Every message is a JSON text frame tagged by its ``type`` field. Each type is a frozen msgspec
Struct; the module groups them by direction::

    client -> scheduler   ClientMessage    (SessionInit, AudioChunk, ..., WebrtcIce)
    scheduler -> client   ServerMessage    (SessionInitAck, TranslationResult, ..., RoomExpired)
    node -> scheduler     NodeMessage      (NodeRegister, NodeHeartbeat, JobResult, ...)
    scheduler -> node     NodeCommand      (NodeRegisterAck, JobAssign, JobCancel, NodeControl)

Tolerance is the original's (serde, §2 conventions): unknown fields are ignored, ``null`` and
absence are the same for optional fields, optional fields are omitted on output, required fields
are required. Like the original, a socket also *parses* the types that travel the other way
(a client echoing a ``translation_result``, a node echoing a ``job_assign``): they decode, and the
gateways ignore them (§2.4, §2.2).

Where the original's strictness made real nodes vanish silently (§7.15: a float ``memory_gb``, an
unknown service type), fields nobody reads are typed loosely: numbers accept floats, service
types and statuses are free strings.

Errors::

    ValueError
     └── ProtocolError   bad JSON, not an object, unknown type, missing or mistyped field

``decode_client_message`` / ``decode_node_message`` raise only :class:`ProtocolError`; the
session gateway answers it with ``error{INVALID_MESSAGE}``, the node gateway only logs it (docs/protocol.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

__all__ = [
    "ERROR_CODES",
    "GENERIC_ERROR_HINT",
    "UI_EVENT_TYPES",
    "ASRMetrics",
    "AsrPartial",
    "AudioChunk",
    "CapabilityByType",
    "ClientHeartbeat",
    "ClientMessage",
    "ErrorMessage",
    "ExtraResult",
    "FeatureFlags",
    "GpuInfo",
    "HardwareInfo",
    "InstalledModel",
    "InstalledService",
    "JobAck",
    "JobAssign",
    "JobCancel",
    "JobError",
    "JobResult",
    "JobStarted",
    "MissingResult",
    "NetworkTimings",
    "NodeAsrPartial",
    "NodeCommand",
    "NodeControl",
    "NodeError",
    "NodeHeartbeat",
    "NodeLanguageCapabilities",
    "NodeMessage",
    "NodeRegister",
    "NodeRegisterAck",
    "PipelineConfig",
    "ProcessingMetrics",
    "ProtocolError",
    "RerunMetrics",
    "ResourceUsage",
    "RoomCreate",
    "RoomCreateAck",
    "RoomError",
    "RoomExpired",
    "RoomJoin",
    "RoomLeave",
    "RoomMembers",
    "RoomRawVoicePreference",
    "SegmentsMeta",
    "ServerHeartbeat",
    "ServerMessage",
    "ServiceTimings",
    "SessionClose",
    "SessionCloseAck",
    "SessionInit",
    "SessionInitAck",
    "TranslationResult",
    "TtsPlayEnded",
    "TtsStarted",
    "UiEvent",
    "Utterance",
    "WebrtcAnswer",
    "WebrtcIce",
    "WebrtcOffer",
    "decode_as",
    "decode_client_message",
    "decode_node_message",
    "encode",
    "ui_event",
]


class ProtocolError(ValueError):
    """A frame that is not a valid message: bad JSON, unknown ``type``, missing/mistyped field.

    Raised by the decoders only; the message says what is wrong and where (msgspec's path).
    """


# Unsigned integers of the original (u32/u64): a negative value fails the frame, as in serde.
UInt = Annotated[int, msgspec.Meta(ge=0)]
# Numbers nobody reads where the original's integer strictness dropped whole frames (§7.15).
Number = int | float

# `ErrorCode` of messages/error.rs (§2.1). Node codes outside it (PROCESSING_ERROR) are relayed
# verbatim in `error.code`; `ui_event.error_code` names only these.
ERROR_CODES = frozenset(
    {
        "INVALID_MESSAGE",
        "INTERNAL_ERROR",
        "INVALID_SESSION",
        "SESSION_CLOSED",
        "NODE_UNAVAILABLE",
        "NODE_OVERLOADED",
        "MODEL_NOT_AVAILABLE",
        "MODEL_LOAD_FAILED",
        "UNSUPPORTED_FEATURE",
        "INVALID_PAIRING_CODE",
        "NO_AVAILABLE_NODE",
        "WS_DISCONNECTED",
        "NMT_TIMEOUT",
        "TTS_TIMEOUT",
        "JOB_TIMEOUT",
        "MODEL_VERIFY_FAILED",
        "MODEL_CORRUPTED",
        "NO_GPU_AVAILABLE",
        "NODE_ID_CONFLICT",
        "INVALID_CAPABILITY_SCHEMA",
        "SCHEDULER_DEPENDENCY_DOWN",
    }
)
# The original's fallback user hint (`get_error_hint`); the browser ignores ui_event anyway.
GENERIC_ERROR_HINT = "发生错误，请稍后重试。"

UiEventType = Literal[
    "INPUT_STARTED",
    "INPUT_ENDED",
    "ASR_PARTIAL",
    "ASR_FINAL",
    "DISPATCHED",
    "NODE_ACCEPTED",
    "NMT_DONE",
    "TTS_PLAY_STARTED",
    "TTS_PLAY_ENDED",
    "ERROR",
]
UiEventStatus = Literal["ok", "error"]
UI_EVENT_TYPES: frozenset[str] = frozenset(UiEventType.__args__)  # type: ignore[attr-defined]


# -- shared sub-objects (messages/common.rs) ------------------------------------------------


class _Obj(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A nested JSON object: optional fields default to None and are omitted on output."""


class FeatureFlags(_Obj, frozen=True, kw_only=True):
    emotion_detection: bool | None = None
    voice_style_detection: bool | None = None
    speech_rate_detection: bool | None = None
    speech_rate_control: bool | None = None
    speaker_identification: bool | None = None
    persona_adaptation: bool | None = None


class PipelineConfig(msgspec.Struct, frozen=True, kw_only=True):
    # Not omit_defaults: the original always writes all five flags (§2.3 example).
    use_asr: bool
    use_nmt: bool
    use_tts: bool
    use_semantic: bool = False
    use_tone: bool = False


class InstalledModel(_Obj, frozen=True, kw_only=True):
    model_id: str
    kind: str
    src_lang: str | None = None
    tgt_lang: str | None = None
    dialect: str | None = None
    version: str
    enabled: bool | None = None


class InstalledService(_Obj, frozen=True, kw_only=True):
    service_id: str
    # ServiceType / device / status: free strings here, an unknown value must not drop the
    # node's whole heartbeat (§7.15). The original's values: asr|nmt|tts|tone|semantic|
    # phonetic|punctuation, gpu|cpu, running|stopped|error.
    type: str
    device: str
    status: str
    version: str | None = None
    model_id: str | None = None
    engine: str | None = None
    mem_mb: Number | None = None
    warmup_ms: Number | None = None
    last_error: str | None = None


class CapabilityByType(_Obj, frozen=True, kw_only=True):
    type: str
    ready: bool
    reason: str | None = None
    ready_impl_ids: list[str] | None = None


class NodeLanguageCapabilities(_Obj, frozen=True, kw_only=True):
    asr_languages: list[str] | None = None
    tts_languages: list[str] | None = None
    semantic_languages: list[str] | None = None
    semantic_core_ready: bool | None = None


class GpuInfo(_Obj, frozen=True, kw_only=True):
    name: str
    memory_gb: Number


class HardwareInfo(_Obj, frozen=True, kw_only=True):
    cpu_cores: Number
    memory_gb: Number
    gpus: list[GpuInfo] | None = None


class ResourceUsage(_Obj, frozen=True, kw_only=True):
    cpu_percent: float
    gpu_percent: float | None = None
    gpu_mem_percent: float | None = None
    mem_percent: float
    running_jobs: UInt


class ServiceTimings(_Obj, frozen=True, kw_only=True):
    asr_ms: UInt | None = None
    nmt_ms: UInt | None = None
    tts_ms: UInt | None = None
    total_ms: UInt | None = None


class NetworkTimings(_Obj, frozen=True, kw_only=True):
    web_to_scheduler_ms: UInt | None = None
    scheduler_to_node_ms: UInt | None = None
    node_to_scheduler_ms: UInt | None = None
    scheduler_to_web_ms: UInt | None = None


class ExtraResult(_Obj, frozen=True, kw_only=True):
    """A filter (§2.1): keys the node adds (``pendingEmptyJobs``...) are dropped on decode."""

    emotion: str | None = None
    speech_rate: float | None = None
    voice_style: str | None = None
    service_timings: ServiceTimings | None = None
    language_probability: float | None = None
    language_probabilities: dict[str, float] | None = None
    reason: str | None = None


class SegmentsMeta(_Obj, frozen=True, kw_only=True):
    count: UInt
    max_gap: float
    avg_duration: float


class RerunMetrics(_Obj, frozen=True, kw_only=True, rename="camel"):
    total_reruns: UInt
    successful_reruns: UInt
    failed_reruns: UInt
    timeout_reruns: UInt
    quality_improvements: UInt


class ProcessingMetrics(_Obj, frozen=True, kw_only=True, rename="camel"):
    service_efficiencies: dict[str, float]


class ASRMetrics(_Obj, frozen=True, kw_only=True, rename="camel"):
    processing_efficiency: float | None = None


class JobError(_Obj, frozen=True, kw_only=True):
    code: str
    message: str
    details: Any | None = None


# -- messages ------------------------------------------------------------------------------


class _Msg(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """A top-level frame; the subclass's ``tag`` is its wire ``type``."""


# client -> scheduler (§2.4)


class SessionInit(_Msg, frozen=True, kw_only=True, tag="session_init"):
    client_version: str
    platform: str
    src_lang: str
    tgt_lang: str
    dialect: str | None = None
    features: FeatureFlags | None = None
    pairing_code: str | None = None
    tenant_id: str | None = None
    mode: str | None = None
    lang_a: str | None = None
    lang_b: str | None = None
    auto_langs: list[str] | None = None
    enable_streaming_asr: bool | None = None
    partial_update_interval_ms: UInt | None = None
    trace_id: str | None = None


class AudioChunk(_Msg, frozen=True, kw_only=True, tag="audio_chunk"):
    session_id: str
    seq: UInt
    is_final: bool
    payload: str | None = None  # base64 Plan-A Opus; "" on the manual cut
    client_timestamp_ms: int | None = None


class Utterance(_Msg, frozen=True, kw_only=True, tag="utterance"):
    session_id: str
    utterance_index: UInt
    manual_cut: bool
    src_lang: str
    tgt_lang: str
    dialect: str | None = None
    features: FeatureFlags | None = None
    audio: str  # base64
    audio_format: str
    sample_rate: UInt
    mode: str | None = None
    lang_a: str | None = None
    lang_b: str | None = None
    auto_langs: list[str] | None = None
    enable_streaming_asr: bool | None = None
    partial_update_interval_ms: UInt | None = None
    trace_id: str | None = None
    pipeline: PipelineConfig | None = None


class ClientHeartbeat(_Msg, frozen=True, kw_only=True, tag="client_heartbeat"):
    session_id: str
    timestamp: int


class SessionClose(_Msg, frozen=True, kw_only=True, tag="session_close"):
    session_id: str
    reason: str


class TtsStarted(_Msg, frozen=True, kw_only=True, tag="tts_started"):
    session_id: str
    trace_id: str
    group_id: str
    ts_start_ms: UInt


class TtsPlayEnded(_Msg, frozen=True, kw_only=True, tag="tts_play_ended"):
    session_id: str
    trace_id: str
    group_id: str
    ts_end_ms: UInt  # client clock (§7.12): never compared with server time


class RoomCreate(_Msg, frozen=True, kw_only=True, tag="room_create"):
    client_ts: UInt
    display_name: str | None = None
    preferred_lang: str | None = None


class RoomJoin(_Msg, frozen=True, kw_only=True, tag="room_join"):
    room_code: str
    display_name: str | None = None
    preferred_lang: str | None = None


class RoomLeave(_Msg, frozen=True, kw_only=True, tag="room_leave"):
    room_code: str


class RoomRawVoicePreference(_Msg, frozen=True, kw_only=True, tag="room_raw_voice_preference"):
    room_code: str
    target_session_id: str
    receive_raw_voice: bool


# Relayed both ways; on delivery `to` carries the sender's session id (§2.5). The SDP and the
# candidate are opaque JSON values (`null` included, as serde_json::Value).
class WebrtcOffer(_Msg, frozen=True, kw_only=True, tag="webrtc_offer"):
    room_code: str
    to: str
    sdp: Any


class WebrtcAnswer(_Msg, frozen=True, kw_only=True, tag="webrtc_answer"):
    room_code: str
    to: str
    sdp: Any


class WebrtcIce(_Msg, frozen=True, kw_only=True, tag="webrtc_ice"):
    room_code: str
    to: str
    candidate: Any


# scheduler -> client (§2.5)


class SessionInitAck(_Msg, frozen=True, kw_only=True, tag="session_init_ack"):
    session_id: str
    assigned_node_id: str | None = None
    message: str
    trace_id: str
    # Optional on decode; `relay.session_init_ack` always sets them, so `false` is written.
    protocol_version: str | None = None
    use_binary_frame: bool | None = None
    negotiated_codec: str | None = None
    negotiated_audio_format: str | None = None
    negotiated_sample_rate: UInt | None = None
    negotiated_channel_count: UInt | None = None


class TranslationResult(_Msg, frozen=True, kw_only=True, tag="translation_result"):
    session_id: str
    utterance_index: UInt
    job_id: str
    # Always present, "" when the node sent none (§2.5).
    text_asr: str
    text_translated: str
    tts_audio: str
    tts_format: str
    extra: ExtraResult | None = None
    trace_id: str
    group_id: str | None = None
    part_index: UInt | None = None
    service_timings: ServiceTimings | None = None
    network_timings: NetworkTimings | None = None
    scheduler_sent_at_ms: int | None = None
    asr_quality_level: str | None = None
    reason_codes: list[str] | None = None
    quality_score: float | None = None
    rerun_count: UInt | None = None
    segments_meta: SegmentsMeta | None = None


class AsrPartial(_Msg, frozen=True, kw_only=True, tag="asr_partial"):
    session_id: str
    utterance_index: UInt
    job_id: str  # always "" towards the client (§2.5)
    text: str
    is_final: bool
    trace_id: str


class UiEvent(_Msg, frozen=True, kw_only=True, tag="ui_event"):
    trace_id: str
    session_id: str
    job_id: str
    # None only where the sender does not know it (NODE_ACCEPTED from a job_ack): omitted.
    utterance_index: UInt | None = None
    event: UiEventType
    status: UiEventStatus
    elapsed_ms: UInt | None = None
    error_code: str | None = None
    hint: str | None = None


class ErrorMessage(_Msg, frozen=True, kw_only=True, tag="error"):
    code: str
    message: str
    details: Any | None = None


class ServerHeartbeat(_Msg, frozen=True, kw_only=True, tag="server_heartbeat"):
    session_id: str
    timestamp: int


class SessionCloseAck(_Msg, frozen=True, kw_only=True, tag="session_close_ack"):
    session_id: str


class MissingResult(_Msg, frozen=True, kw_only=True, tag="missing_result"):
    session_id: str
    utterance_index: UInt
    reason: str  # "silence_detected" is the only one the original emits
    created_at_ms: int
    trace_id: str


class RoomCreateAck(_Msg, frozen=True, kw_only=True, tag="room_create_ack"):
    room_code: str
    room_id: str | None = None


class RoomMembers(_Msg, frozen=True, kw_only=True, tag="room_members"):
    room_code: str
    # Participant objects (scheduler.rooms.Participant as builtins): participant_id,
    # session_id, display_name?, preferred_lang?, raw_voice_preferences?, joined_at.
    members: list[dict[str, Any]]


class RoomError(_Msg, frozen=True, kw_only=True, tag="room_error"):
    code: str
    message: str | None = None


class RoomExpired(_Msg, frozen=True, kw_only=True, tag="room_expired"):
    room_code: str
    message: str


# node -> scheduler (§2.2)


class NodeRegister(_Msg, frozen=True, kw_only=True, tag="node_register"):
    node_id: str | None = None  # null: the scheduler assigns one; else reuse on reconnect
    version: str
    capability_schema_version: str | None = None
    platform: str
    hardware: HardwareInfo
    installed_models: list[InstalledModel]
    installed_services: list[InstalledService] | None = None
    capability_by_type: list[CapabilityByType]
    features_supported: FeatureFlags
    advanced_features: list[str] | None = None
    accept_public_jobs: bool
    language_capabilities: NodeLanguageCapabilities | None = None
    # Our extension (the real node never sends it): absent -> scheduling's configured default.
    max_concurrent_jobs: UInt | None = None


class NodeHeartbeat(_Msg, frozen=True, kw_only=True, tag="node_heartbeat"):
    node_id: str
    timestamp: int
    resource_usage: ResourceUsage
    installed_models: list[InstalledModel] | None = None
    installed_services: list[InstalledService]
    capability_by_type: list[CapabilityByType]
    rerun_metrics: RerunMetrics | None = None
    asr_metrics: ASRMetrics | None = None
    processing_metrics: ProcessingMetrics | None = None
    language_capabilities: NodeLanguageCapabilities | None = None
    max_concurrent_jobs: UInt | None = None  # extension, as in NodeRegister


class JobResult(_Msg, frozen=True, kw_only=True, tag="job_result"):
    job_id: str
    attempt_id: UInt
    node_id: str
    session_id: str
    utterance_index: UInt
    success: bool
    text_asr: str | None = None
    text_translated: str | None = None
    tts_audio: str | None = None  # base64
    tts_format: str | None = None
    extra: ExtraResult | None = None
    processing_time_ms: UInt | None = None
    error: JobError | None = None
    trace_id: str
    group_id: str | None = None
    part_index: UInt | None = None
    node_completed_at_ms: int | None = None
    asr_quality_level: str | None = None
    reason_codes: list[str] | None = None
    quality_score: float | None = None
    rerun_count: UInt | None = None
    segments_meta: SegmentsMeta | None = None


class NodeAsrPartial(_Msg, frozen=True, kw_only=True, tag="asr_partial"):
    job_id: str
    node_id: str
    session_id: str
    utterance_index: UInt
    text: str
    is_final: bool
    trace_id: str


class JobAck(_Msg, frozen=True, kw_only=True, tag="job_ack"):
    job_id: str
    attempt_id: UInt
    node_id: str
    session_id: str
    trace_id: str


class JobStarted(_Msg, frozen=True, kw_only=True, tag="job_started"):
    job_id: str
    attempt_id: UInt
    node_id: str
    session_id: str
    trace_id: str


class NodeError(_Msg, frozen=True, kw_only=True, tag="node_error"):
    node_id: str
    code: str
    message: str
    details: Any | None = None


# scheduler -> node (§2.3)


class NodeRegisterAck(_Msg, frozen=True, kw_only=True, tag="node_register_ack"):
    node_id: str
    message: str
    status: str  # always "registering"


class JobAssign(_Msg, frozen=True, kw_only=True, tag="job_assign"):
    job_id: str
    attempt_id: UInt
    session_id: str
    utterance_index: UInt
    src_lang: str
    tgt_lang: str
    dialect: str | None = None
    features: FeatureFlags | None = None
    pipeline: PipelineConfig
    audio: str  # base64 of the utterance bytes (Plan-A Opus on the streaming path)
    audio_format: str
    sample_rate: UInt
    mode: str | None = None
    lang_a: str | None = None
    lang_b: str | None = None
    auto_langs: list[str] | None = None
    enable_streaming_asr: bool | None = None
    partial_update_interval_ms: UInt | None = None
    trace_id: str
    group_id: str | None = None
    part_index: UInt | None = None
    context_text: str | None = None
    padding_ms: UInt | None = None
    # Omitted when false: the node treats absent as false (§2.3).
    is_manual_cut: bool = False
    is_pause_triggered: bool = False
    is_timeout_triggered: bool = False
    is_max_duration_triggered: bool = False
    turn_id: str | None = None


class JobCancel(_Msg, frozen=True, kw_only=True, tag="job_cancel"):
    job_id: str
    trace_id: str | None = None
    reason: str | None = None  # "job_timeout" from the daemon's failover


class NodeControl(_Msg, frozen=True, kw_only=True, tag="node_control"):
    command: str
    reason: str | None = None


ClientMessage = (
    SessionInit
    | AudioChunk
    | Utterance
    | ClientHeartbeat
    | SessionClose
    | TtsStarted
    | TtsPlayEnded
    | RoomCreate
    | RoomJoin
    | RoomLeave
    | RoomRawVoicePreference
    | WebrtcOffer
    | WebrtcAnswer
    | WebrtcIce
)
ServerMessage = (
    SessionInitAck
    | TranslationResult
    | AsrPartial
    | UiEvent
    | ErrorMessage
    | ServerHeartbeat
    | SessionCloseAck
    | MissingResult
    | RoomCreateAck
    | RoomMembers
    | RoomError
    | RoomExpired
)
NodeMessage = (
    NodeRegister | NodeHeartbeat | JobResult | NodeAsrPartial | JobAck | JobStarted | NodeError
)
NodeCommand = NodeRegisterAck | JobAssign | JobCancel | NodeControl | ErrorMessage

# What each socket parses: its own direction plus the other one, which the gateways ignore.
_client_decoder = msgspec.json.Decoder(ClientMessage | ServerMessage)
_node_decoder = msgspec.json.Decoder(NodeMessage | NodeCommand)
_encoder = msgspec.json.Encoder()


def _decode(decoder: msgspec.json.Decoder[Any], data: str | bytes) -> Any:
    if not isinstance(data, str | bytes | bytearray | memoryview):
        raise ProtocolError(f"a frame must be text or bytes, not {type(data).__name__}")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(str(exc)) from exc
    except (msgspec.DecodeError, UnicodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    except RecursionError as exc:  # absurdly nested JSON
        raise ProtocolError("JSON nested too deeply") from exc


def decode_client_message(data: str | bytes) -> ClientMessage | ServerMessage:
    """Parse one ``/ws/session`` frame. Raises :class:`ProtocolError` and nothing else."""
    message: ClientMessage | ServerMessage = _decode(_client_decoder, data)
    return message


def decode_node_message(data: str | bytes) -> NodeMessage | NodeCommand:
    """Parse one ``/ws/node`` frame. Raises :class:`ProtocolError` and nothing else."""
    message: NodeMessage | NodeCommand = _decode(_node_decoder, data)
    return message


_M = TypeVar("_M", bound=msgspec.Struct)
_typed_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode_as(data: str | bytes, message_type: type[_M]) -> _M:
    """Parse a frame that must be one given type (e.g. a ``job_result`` from an inbox).

    Raises :class:`ProtocolError` (and nothing else) when it is not that message.
    """
    decoder = _typed_decoders.get(message_type)
    if decoder is None:
        decoder = _typed_decoders[message_type] = msgspec.json.Decoder(message_type)
    message: _M = _decode(decoder, data)
    return message


def encode(msg: msgspec.Struct) -> bytes:
    """One message as its JSON frame (optional fields that are unset are omitted)."""
    return _encoder.encode(msg)


def ui_event(
    session_id: str,
    job_id: str,
    utterance_index: int | None,
    event: str,
    trace_id: str,
    **extra: Any,
) -> UiEvent:
    """A ``ui_event``; ``status`` is "error" for ERROR, else "ok", unless given in ``extra``.

    ``extra`` sets the optional fields (``elapsed_ms``, ``error_code``, ``hint``). An ``event``
    outside the original's ``UiEventType`` is a programming error: ValueError.
    """
    if event not in UI_EVENT_TYPES:
        raise ValueError(f"unknown ui_event type {event!r}")
    status = extra.pop("status", "error" if event == "ERROR" else "ok")
    return UiEvent(
        trace_id=trace_id,
        session_id=session_id,
        job_id=job_id,
        utterance_index=utterance_index,
        event=event,  # type: ignore[arg-type]  # checked against UI_EVENT_TYPES above
        status=status,
        **extra,
    )
