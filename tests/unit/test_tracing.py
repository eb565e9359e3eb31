"""Tracing's pure parts: the trace id of a client's trace_id, the envelope's trace context, the
configuration keys."""

from __future__ import annotations

import hashlib
import uuid

import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from prometheus_client import CollectorRegistry

from cross_instance.envelope import Envelope
from scheduler.config import ConfigError, TracingConfig, load_config
from scheduler.tracing import NO_TRACING, start
from scheduler.tracing_otel import OtelTracing, otel_trace_id


def test_a_uuid_trace_id_is_the_trace_id_with_its_dashes_stripped() -> None:
    client = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert f"{otel_trace_id(client):032x}" == "1b4e28ba2fa111d2883f0016d3cca427"
    assert otel_trace_id(client.upper()) == otel_trace_id(client)


def test_any_other_trace_id_is_hashed_to_the_same_id_everywhere() -> None:
    digest = hashlib.sha256(b"web-7f3a9c").digest()[:16]
    assert otel_trace_id("web-7f3a9c") == int.from_bytes(digest, "big")
    # The nil UUID is no valid trace id: it is hashed too.
    assert otel_trace_id(str(uuid.UUID(int=0))) not in (0, otel_trace_id("web-7f3a9c"))
    assert otel_trace_id("") == 0  # none: the tracer picks a random one


class _EnvelopeBefore(msgspec.Struct, kw_only=True, frozen=True):
    """The envelope as replicas older than the trace context field wrote and read it."""

    message_id: str
    kind: str
    target_kind: str
    target_id: str
    payload: str
    trace_id: str = ""
    created_ms: int = 0
    origin: str = ""
    resumable: bool = True


def test_an_envelope_without_trace_context_decodes_and_old_readers_ignore_it() -> None:
    old = _EnvelopeBefore(
        message_id="m1", kind="frame", target_kind="node", target_id="n1", payload="{}"
    )
    read = msgspec.json.decode(msgspec.json.encode(old), type=Envelope)
    assert read.tc == "" and read.payload == "{}"
    traceparent = "00-1b4e28ba2fa111d2883f0016d3cca427-00f067aa0ba902b7-01"
    new = msgspec.structs.replace(read, tc=traceparent)
    assert msgspec.json.decode(msgspec.json.encode(new), type=Envelope).tc == traceparent
    assert msgspec.json.decode(msgspec.json.encode(new), type=_EnvelopeBefore) == old


def test_tracing_is_off_by_default_and_configured_by_environment() -> None:
    assert start(load_config(environ={}).tracing, "r1") is NO_TRACING
    config = load_config(
        environ={"LINGUA_TRACING__ENABLED": "true", "LINGUA_TRACING__SAMPLE_RATIO": "0.25"}
    )
    assert config.tracing.enabled and config.tracing.sample_ratio == 0.25
    tracing = start(config.tracing, "r1")
    try:
        assert isinstance(tracing, OtelTracing)
    finally:
        tracing.shutdown()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LINGUA_TRACING__SAMPLE_RATIO": "1.5"}, "tracing.sample_ratio"),
        (
            {"LINGUA_TRACING__EXPORT_BATCH": "100", "LINGUA_TRACING__QUEUE_MAX": "10"},
            "tracing.export_batch: must not exceed tracing.queue_max",
        ),
    ],
)
def test_bad_tracing_values_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ=environ)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_the_sample_ratio_holds_for_uuid_trace_ids(ratio: float) -> None:
    # Browsers' trace ids are UUIDs: their low 64 bits start with the variant bits, on which a
    # plain TraceIdRatioBased decided (0.1 and 0.5 kept none, 0.9 kept all).
    tracing = OtelTracing(
        TracingConfig(sample_ratio=ratio),
        "r",
        registry=CollectorRegistry(),
        exporter=InMemorySpanExporter(),
    )
    sampler = tracing.provider.sampler
    ids = [uuid.UUID(int=(n * 0x9E3779B97F4A7C15) % 2**128, version=4) for n in range(1, 2001)]
    kept = sum(
        sampler.should_sample(None, otel_trace_id(str(i)), "dispatch").decision
        is Decision.RECORD_AND_SAMPLE
        for i in ids
    )
    assert abs(kept / len(ids) - ratio) < 0.05, kept
