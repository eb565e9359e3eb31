"""The OpenTelemetry tracer behind :mod:`scheduler.tracing` (imported only when tracing is on).

One ``TracerProvider`` per replica (``service.instance.id`` = its instance id), so replicas in
one process stay apart. The trace of an utterance has the id of the client's ``trace_id``
(:func:`otel_trace_id`): a root span takes it from :class:`_ClientTraceIds` instead of a random
one, so every replica that starts a span of that utterance without a parent (a session's
dispatch, an envelope without ``tc`` from an older replica, a node result whose round trip
began elsewhere) lands in the same trace. The sampler is parent-based on a ratio of the trace
id: every replica keeps or drops the same utterances.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ParentBased,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter

from cross_instance.clock import now_ms
from cross_instance.envelope import Envelope
from scheduler.config import TracingConfig

__all__ = ["OtelTracing", "otel_trace_id"]

# scheduler.tracing.Attr (not imported: that module imports this one when tracing is on).
Attr = str | int | bool
_INVALID_TRACE_ID = 0
# The trace id the next root span takes (0: a random one); set only around a span's start.
_wanted_trace_id: ContextVar[int] = ContextVar("lingua_wanted_trace_id", default=0)
_propagator = TraceContextTextMapPropagator()


def otel_trace_id(trace_id: str) -> int:
    """The 128-bit trace id of a client's ``trace_id``: a UUID's own 32 hex digits (dashes
    stripped), anything else the first 16 bytes of its SHA-256; 0 (none) for ""."""
    if not trace_id:
        return _INVALID_TRACE_ID
    try:
        value = uuid.UUID(trace_id).int
    except ValueError:
        value = 0
    if value == _INVALID_TRACE_ID:  # not a UUID, or the nil UUID (an invalid trace id)
        value = int.from_bytes(hashlib.sha256(trace_id.encode()).digest()[:16], "big")
    return value


class _HashedTraceIdRatio(TraceIdRatioBased):
    """``TraceIdRatioBased`` on a hash of the trace id: it decides on the low 64 bits, which in a
    UUID (most client trace ids) start with the variant bits, so every UUID fell in one quarter
    of the range (a ratio of 0.5 or less kept none). Still a function of the trace id alone, so
    every replica decides the same."""

    def should_sample(  # type: ignore[no-untyped-def]
        self, parent_context, trace_id: int, *args, **kwargs
    ) -> SamplingResult:
        digest = hashlib.sha256(trace_id.to_bytes(16, "big")).digest()
        return super().should_sample(
            parent_context, int.from_bytes(digest[:8], "big"), *args, **kwargs
        )


class _ClientTraceIds(IdGenerator):
    """Random ids, except the trace id a root span of a client's trace asked for."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        return _wanted_trace_id.get() or self._random.generate_trace_id()


class _JobFrame(msgspec.Struct):
    """What a frame written to a node says about its job (the rest is not decoded)."""

    type: str = ""
    job_id: str = ""
    attempt_id: int = 0
    utterance_index: int = -1
    trace_id: str | None = None
    reason: str | None = None


_job_frame = msgspec.json.Decoder(_JobFrame)


class _CountingExporter(SpanExporter):
    """The exporter, counting what it exported and what it could not."""

    def __init__(self, inner: SpanExporter, counter: Counter) -> None:
        self.inner = inner
        self.counter = counter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            self.counter.labels("failure").inc(len(spans))
            raise
        outcome = "success" if result is SpanExportResult.SUCCESS else "failure"
        self.counter.labels(outcome).inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class OtelTracing:
    """:class:`scheduler.tracing.Tracing` on the OpenTelemetry SDK."""

    def __init__(
        self,
        config: TracingConfig,
        instance_id: str,
        *,
        registry: CollectorRegistry | None = None,
        exporter: object | None = None,
    ) -> None:
        self.config = config
        resource = Resource.create(
            {"service.name": config.service_name, "service.instance.id": instance_id}
        )
        self.provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(_HashedTraceIdRatio(config.sample_ratio)),
            id_generator=_ClientTraceIds(),
        )
        exported = Counter(
            "lingua_tracing_spans_exported",
            "Spans handed to the exporter, by result (failure: the collector refused them or "
            "was unreachable; they are lost)",
            ["result"],
            registry=registry,
        )
        for outcome in ("success", "failure"):  # series at 0: a first failure is an increase
            exported.labels(outcome)
        if exporter is not None:
            if not isinstance(exporter, SpanExporter):
                raise TypeError(f"exporter must be a SpanExporter, not {type(exporter).__name__}")
            self.provider.add_span_processor(
                SimpleSpanProcessor(_CountingExporter(exporter, exported))
            )
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            otlp = OTLPSpanExporter(
                endpoint=config.otlp_endpoint, timeout=config.export_timeout_ms / 1000
            )
            self.provider.add_span_processor(
                BatchSpanProcessor(
                    _CountingExporter(otlp, exported),
                    max_queue_size=config.queue_max,
                    schedule_delay_millis=config.export_interval_ms,
                    max_export_batch_size=config.export_batch,
                    export_timeout_millis=config.export_timeout_ms,
                )
            )
        self.tracer = self.provider.get_tracer("lingua-scheduler")
        # (node id, job id, attempt) -> (connection generation, span), oldest first.
        self.round_trips: OrderedDict[tuple[str, str, int], tuple[int, Span]] = OrderedDict()

    # -- starting spans ---------------------------------------------------------------------

    def _start(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Attr],
        trace_id: str,
        parent: Context | None = None,
    ) -> Span:
        """A child of ``parent`` (None: the current context); with no valid parent, a root
        span in the trace of the client's ``trace_id``."""
        if trace.get_current_span(parent).get_span_context().is_valid:
            return self.tracer.start_span(name, parent, kind, attributes)
        token = _wanted_trace_id.set(otel_trace_id(trace_id))
        try:
            return self.tracer.start_span(name, Context(), kind, attributes)
        finally:
            _wanted_trace_id.reset(token)

    @contextmanager
    def _span(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Attr],
        trace_id: str,
        parent: Context | None = None,
    ) -> Iterator[Span]:
        span = self._start(name, kind, attributes, trace_id, parent)
        with trace.use_span(span, end_on_exit=True):
            yield span

    # -- the spans of an utterance ------------------------------------------------------------

    @contextmanager
    def dispatch(
        self, trace_id: str, session_id: str, utterance_index: int, reason: str
    ) -> Iterator[None]:
        attributes: dict[str, Attr] = {
            "lingua.session_id": session_id,
            "lingua.utterance_index": utterance_index,
            "lingua.trace_id": trace_id,
            "lingua.finalize_reason": reason,
        }
        # Always a root: an utterance is a trace of its own, whatever runs around it.
        with self._span("dispatch", SpanKind.INTERNAL, attributes, trace_id, Context()):
            yield

    @contextmanager
    def send(self, kind: str, target_kind: str, target_id: str, trace_id: str) -> Iterator[str]:
        attributes: dict[str, Attr] = {
            "lingua.message.kind": kind,
            "lingua.target.kind": target_kind,
            "lingua.target.id": target_id,
        }
        with self._span("inbox send", SpanKind.PRODUCER, attributes, trace_id) as span:
            carrier: dict[str, str] = {}
            _propagator.inject(carrier, trace.set_span_in_context(span))
            yield carrier.get("traceparent", "")

    @contextmanager
    def handle(self, envelope: Envelope) -> Iterator[None]:
        parent: Context | None = None
        if envelope.tc:
            parent = _propagator.extract({"traceparent": envelope.tc})
        attributes: dict[str, Attr] = {
            "lingua.message.kind": envelope.kind,
            "lingua.target.kind": envelope.target_kind,
            "lingua.target.id": envelope.target_id,
            "messaging.message.id": envelope.message_id,
            "lingua.origin": envelope.origin,
        }
        if envelope.created_ms:
            attributes["lingua.inbox.age_ms"] = max(0, now_ms() - envelope.created_ms)
        # No (valid) tc, e.g. from a replica older than the field: a root of the client's trace.
        with self._span(
            "inbox handle", SpanKind.CONSUMER, attributes, envelope.trace_id, parent or Context()
        ):
            yield

    def node_sent(self, node_id: str, generation: int, payload: str) -> None:
        try:
            frame = _job_frame.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if frame.type == "job_assign":
            key = (node_id, frame.job_id, frame.attempt_id)
            attributes: dict[str, Attr] = {
                "lingua.node_id": node_id,
                "lingua.job_id": frame.job_id,
                "lingua.attempt": frame.attempt_id,
                "lingua.utterance_index": frame.utterance_index,
            }
            span = self._start("node round trip", SpanKind.CLIENT, attributes, frame.trace_id or "")
            old = self.round_trips.pop(key, None)
            if old is not None:
                self._end(old[1], "sent_again", error=False)
            self.round_trips[key] = (generation, span)
            while len(self.round_trips) > self.config.open_spans_max:
                _, (_, evicted) = self.round_trips.popitem(last=False)
                self._end(evicted, "evicted", error=False)
        elif frame.type == "job_cancel":
            for key in [k for k in self.round_trips if k[0] == node_id and k[1] == frame.job_id]:
                _, span = self.round_trips.pop(key)
                span.set_attribute("lingua.cancel_reason", frame.reason or "")
                self._end(span, "cancelled", error=False)

    @contextmanager
    def node_result(
        self, node_id: str, job_id: str, attempt_id: int, ok: bool, trace_id: str
    ) -> Iterator[None]:
        entry = self.round_trips.pop((node_id, job_id, attempt_id), None)
        if entry is None:
            # Its job_assign went to another connection or replica (a node that reconnected):
            # the result still joins the utterance's trace.
            attributes: dict[str, Attr] = {
                "lingua.node_id": node_id,
                "lingua.job_id": job_id,
                "lingua.attempt": attempt_id,
                "lingua.success": ok,
            }
            with self._span("node result", SpanKind.SERVER, attributes, trace_id, Context()):
                yield
            return
        span = entry[1]
        span.set_attribute("lingua.success", ok)
        self._end(span, "result", error=not ok)
        # What the result sets off (completion, the send to the session) is its child.
        with trace.use_span(span, end_on_exit=False):
            yield

    def node_gone(self, node_id: str, generation: int) -> None:
        gone = [
            k for k, (gen, _) in self.round_trips.items() if k[0] == node_id and gen == generation
        ]
        for key in gone:
            _, span = self.round_trips.pop(key)
            self._end(span, "disconnected", error=True)

    @contextmanager
    def relay(
        self, session_id: str, job_id: str, utterance_index: int, trace_id: str
    ) -> Iterator[None]:
        attributes: dict[str, Attr] = {
            "lingua.session_id": session_id,
            "lingua.job_id": job_id,
            "lingua.utterance_index": utterance_index,
        }
        with self._span("relay", SpanKind.INTERNAL, attributes, trace_id):
            yield

    def note(self, event: str, **attributes: Attr) -> None:
        trace.get_current_span().add_event(event, attributes)

    def label(self, key: str, value: Attr) -> None:
        trace.get_current_span().set_attribute(key, value)

    def shutdown(self) -> None:
        while self.round_trips:
            _, (_, span) = self.round_trips.popitem(last=False)
            self._end(span, "replica_stopped", error=False)
        self.provider.shutdown()

    @staticmethod
    def _end(span: Span, outcome: str, *, error: bool) -> None:
        span.set_attribute("lingua.outcome", outcome)
        if error:
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()
