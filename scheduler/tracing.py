"""Tracing: OpenTelemetry spans when ``tracing.enabled``, nothing at all otherwise.

The daemon's modules call one :class:`Tracing`; :func:`start` gives them :class:`NoTracing`
(every call returns at once, every span is a shared ``nullcontext``) unless tracing is enabled,
and only then imports :mod:`scheduler.tracing_otel` and with it OpenTelemetry (the
``lingua-scheduler[tracing]`` extra). So a replica without the extra, or with tracing off,
never imports it.

The spans of one utterance (docs/operations.md, "Tracing"), in the trace of its session, whose id
comes from the client's ``trace_id``:

* ``dispatch`` (session's replica): the finalized utterance until its jobs are placed;
* ``inbox send`` / ``inbox handle``: a message between replicas (or in process), the context
  carried in the envelope's opaque ``tc`` field (a W3C ``traceparent``);
* ``node round trip`` (node's replica): ``job_assign`` written to the node until its
  ``job_result`` (or a cancel, or the node's socket closing);
* ``relay`` (session's replica): the result becoming ``translation_result`` frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Protocol

import anyio
from prometheus_client import CollectorRegistry

from cross_instance.envelope import Envelope
from scheduler.config import ConfigError, TracingConfig

__all__ = ["NO_TRACING", "Attr", "NoTracing", "Tracing", "flushed_at_exit", "start"]

Attr = str | int | bool

_NO_SPAN: AbstractContextManager[None] = nullcontext()
_NO_CONTEXT: AbstractContextManager[str] = nullcontext("")


class Tracing(Protocol):
    """What the daemon asks of a tracer. Context managers make their span the current one for
    the block, so spans started inside (and sends, which carry it on) are its children."""

    def dispatch(
        self, trace_id: str, session_id: str, utterance_index: int, reason: str
    ) -> AbstractContextManager[None]:
        """A finalized utterance until its jobs are placed: a root span of the client's trace."""
        ...

    def send(
        self, kind: str, target_kind: str, target_id: str, trace_id: str
    ) -> AbstractContextManager[str]:
        """A send through the runtime; yields the context to carry in the envelope (``tc``)."""
        ...

    def handle(self, envelope: Envelope) -> AbstractContextManager[None]:
        """The runtime's handler on ``envelope``: a child of its sender's span."""
        ...

    def node_sent(self, node_id: str, generation: int, payload: str) -> None:
        """A frame was written to a node: a ``job_assign`` opens its round trip, a
        ``job_cancel`` ends it."""
        ...

    def node_result(
        self, node_id: str, job_id: str, attempt_id: int, ok: bool, trace_id: str
    ) -> AbstractContextManager[None]:
        """A node's ``job_result``: ends its round trip, which the handling is a child of."""
        ...

    def node_gone(self, node_id: str, generation: int) -> None:
        """The node's connection ``generation`` closed: its round trips end unanswered."""
        ...

    def relay(
        self, session_id: str, job_id: str, utterance_index: int, trace_id: str
    ) -> AbstractContextManager[None]:
        """A result becoming the client's frames, on the session's replica."""
        ...

    def note(self, event: str, **attributes: Attr) -> None:
        """An event on the current span (a job placed, a failure told)."""
        ...

    def label(self, key: str, value: Attr) -> None:
        """An attribute of the current span (e.g. where a send went)."""
        ...

    def shutdown(self) -> None:
        """Export what is left (bounded by ``tracing.export_timeout_ms``); blocking."""
        ...


class NoTracing:
    """Tracing off: no span, no import, (almost) no cost."""

    def dispatch(
        self, trace_id: str, session_id: str, utterance_index: int, reason: str
    ) -> AbstractContextManager[None]:
        return _NO_SPAN

    def send(
        self, kind: str, target_kind: str, target_id: str, trace_id: str
    ) -> AbstractContextManager[str]:
        return _NO_CONTEXT

    def handle(self, envelope: Envelope) -> AbstractContextManager[None]:
        return _NO_SPAN

    def node_sent(self, node_id: str, generation: int, payload: str) -> None:
        return None

    def node_result(
        self, node_id: str, job_id: str, attempt_id: int, ok: bool, trace_id: str
    ) -> AbstractContextManager[None]:
        return _NO_SPAN

    def node_gone(self, node_id: str, generation: int) -> None:
        return None

    def relay(
        self, session_id: str, job_id: str, utterance_index: int, trace_id: str
    ) -> AbstractContextManager[None]:
        return _NO_SPAN

    def note(self, event: str, **attributes: Attr) -> None:
        return None

    def label(self, key: str, value: Attr) -> None:
        return None

    def shutdown(self) -> None:
        return None


NO_TRACING = NoTracing()


def start(
    config: TracingConfig,
    instance_id: str,
    *,
    registry: CollectorRegistry | None = None,
    exporter: object | None = None,
) -> Tracing:
    """The replica's tracer: :data:`NO_TRACING` when ``tracing.enabled`` is false.

    ``exporter``: an OpenTelemetry ``SpanExporter`` that gets every span as it ends, instead of
    the batched OTLP exporter (tests, embedding). Raises :class:`ConfigError` when tracing is
    enabled and the extra is not installed.
    """
    if not config.enabled:
        return NO_TRACING
    try:
        from scheduler import tracing_otel
    except ImportError as exc:
        raise ConfigError(
            "tracing.enabled: OpenTelemetry is not installed here "
            f"({exc.name or exc}); install the extra: pip install 'lingua-scheduler[tracing]'"
        ) from None
    return tracing_otel.OtelTracing(config, instance_id, registry=registry, exporter=exporter)


@asynccontextmanager
async def flushed_at_exit(tracing: Tracing) -> AsyncIterator[None]:
    """Around a replica's life: at its end the spans not exported yet are (off the event loop:
    the exporter blocks, at most ``tracing.export_timeout_ms``)."""
    try:
        yield
    finally:
        if not isinstance(tracing, NoTracing):
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(tracing.shutdown)
