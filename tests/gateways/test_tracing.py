"""Tracing across replicas: one utterance is one trace, whichever replicas it crosses.

Two replicas in this process on one real Redis, each with its own in-memory exporter: the
session on A, the node on B, so the ``job_assign`` and the result each take the inbox hop.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from scheduler.tracing_otel import otel_trace_id
from tests.e2e.clients import SimBrowser, SimNode
from tests.gateways.conftest import Serve
from tests.gateways.test_gateways import Connect, connected, is_job, spoken
from tests.waiting import until

pytestmark = pytest.mark.anyio

SRC, TGT = "zh", "en"
TRACING = {"enabled": True}


def one(spans: list[ReadableSpan], name: str, **attributes: str) -> ReadableSpan:
    """The one span called ``name`` whose attributes include ``attributes``."""
    found = [
        s
        for s in spans
        if s.name == name
        and all(
            s.attributes is not None and s.attributes.get(k) == v for k, v in attributes.items()
        )
    ]
    assert len(found) == 1, f"{name} {attributes}: {[s.name for s in spans]}"
    return found[0]


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert span.parent is not None and parent.context is not None
    return span.parent.span_id == parent.context.span_id


@pytest.mark.parametrize(
    "client_trace_id", [str(uuid.uuid4()), "web-7f3a9c"], ids=["uuid", "not-a-uuid"]
)
async def test_one_utterance_across_two_replicas_is_one_trace_of_the_clients_trace_id(
    serve: Serve, peers: Connect, client_trace_id: str
) -> None:
    a_out, b_out = InMemorySpanExporter(), InMemorySpanExporter()
    a = await serve(tracing=TRACING, span_exporter=a_out)
    b = await serve(tracing=TRACING, span_exporter=b_out)
    node, browser, job = await spoken(peers, b.node_url, a.session_url, trace_id=client_trace_id)
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])
    # The frame is on its way before the relay's span (and the handling around it) ends.
    await until(lambda: any(s.name == "inbox handle" for s in a_out.get_finished_spans()))

    on_a, on_b = list(a_out.get_finished_spans()), list(b_out.get_finished_spans())
    expected = otel_trace_id(client_trace_id)
    if client_trace_id != "web-7f3a9c":
        # A UUID is the trace id as it is: what the client logs is what the tracing UI shows.
        assert f"{expected:032x}" == client_trace_id.replace("-", "")
    assert {s.context.trace_id for s in on_a + on_b if s.context} == {expected}
    assert {s.resource.attributes["service.instance.id"] for s in on_a} == {
        a.replica.runtime.instance_id
    }
    assert {s.resource.attributes["service.instance.id"] for s in on_b} == {
        b.replica.runtime.instance_id
    }

    # A: the finalized utterance's dispatch sends the job_assign towards B's node.
    dispatch = one(on_a, "dispatch")
    assert dispatch.parent is None
    assert dispatch.attributes is not None
    assert dispatch.attributes["lingua.utterance_index"] == 0
    assert any(e.name == "job placed" for e in dispatch.events)
    to_node = one(on_a, "inbox send", **{"lingua.target.kind": "node"})
    assert child_of(to_node, dispatch) and to_node.kind is SpanKind.PRODUCER
    assert to_node.attributes is not None and to_node.attributes["lingua.route"] == "remote"
    # B: the hop handled under A's send, the node's round trip under that.
    at_node = one(on_b, "inbox handle", **{"lingua.target.kind": "node"})
    assert child_of(at_node, to_node) and at_node.kind is SpanKind.CONSUMER
    assert at_node.parent is not None and at_node.parent.is_remote
    round_trip = one(on_b, "node round trip", **{"lingua.job_id": job["job_id"]})
    assert child_of(round_trip, at_node)
    assert round_trip.attributes is not None
    assert round_trip.attributes["lingua.outcome"] == "result"
    assert round_trip.attributes["lingua.success"] is True
    # B: the result goes back to A's session; A relays it to the client.
    to_session = one(on_b, "inbox send", **{"lingua.target.kind": "session"})
    assert child_of(to_session, round_trip)
    at_session = one(on_a, "inbox handle", **{"lingua.target.kind": "session"})
    assert child_of(at_session, to_session) and at_session.parent is not None
    assert at_session.parent.is_remote
    relay = one(on_a, "relay", **{"lingua.job_id": job["job_id"]})
    assert child_of(relay, at_session)


async def test_a_session_without_a_trace_id_is_traced_under_the_one_it_was_given(
    serve: Serve, peers: Connect
) -> None:
    out = InMemorySpanExporter()
    served = await serve(tracing=TRACING, span_exporter=out)
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    ack = await browser.init()
    await browser.speak(10)
    job = await node.wait_for(is_job)
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])
    await until(lambda: any(s.name == "relay" for s in out.get_finished_spans()))
    spans = list(out.get_finished_spans())
    # Node and session on one replica: every hop is in process, and still one trace.
    assert {s.context.trace_id for s in spans if s.context} == {uuid.UUID(ack["trace_id"]).int}
    assert {"dispatch", "inbox send", "inbox handle", "node round trip", "relay"} <= {
        s.name for s in spans
    }
    assert one(spans, "inbox send", **{"lingua.target.kind": "node"}).attributes == {
        "lingua.message.kind": "frame",
        "lingua.target.kind": "node",
        "lingua.target.id": node.node_id,
        "lingua.route": "local",
    }


async def test_a_round_trip_the_node_never_answers_ends_when_its_socket_closes(
    serve: Serve, peers: Connect
) -> None:
    out = InMemorySpanExporter()
    served = await serve(tracing=TRACING, span_exporter=out)
    node, _browser, job = await spoken(peers, served.node_url, served.session_url)
    assert not any(s.name == "node round trip" for s in out.get_finished_spans())
    await node.close()
    await until(lambda: any(s.name == "node round trip" for s in out.get_finished_spans()))
    span = one(list(out.get_finished_spans()), "node round trip")
    assert span.attributes is not None
    assert span.attributes["lingua.job_id"] == job["job_id"]
    assert span.attributes["lingua.outcome"] == "disconnected"
    assert not span.status.is_ok
    assert served.replica.tracing.round_trips == {}


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint on loopback: keeps each request's spans."""

    received: list[ExportTraceServiceRequest]
    status: int = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            self.received.append(request)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []
    handler = type("Handler", (Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


async def test_spans_are_exported_over_otlp_http_in_batches_and_counted(
    serve: Serve, peers: Connect, collector: tuple[str, list[ExportTraceServiceRequest]]
) -> None:
    endpoint, received = collector
    tracing = {"enabled": True, "otlp_endpoint": endpoint, "export_interval_ms": 50}
    served = await serve(tracing=tracing, runtime={"instance_id": "otlp-replica"})
    node = await connected(peers, SimNode(served.node_url, ([SRC], [TGT])))
    await node.register()
    browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
    client_trace_id = str(uuid.uuid4())
    await browser.init(trace_id=client_trace_id)
    await browser.speak(10)
    job = await node.wait_for(is_job)
    await node.send(node.result_for(job))
    await browser.wait_type("translation_result", job_id=job["job_id"])

    def exported() -> dict[str, set[bytes]]:
        names: dict[str, set[bytes]] = {}
        for request in received:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                assert attributes["service.name"] == "lingua-scheduler"
                assert attributes["service.instance.id"] == "otlp-replica"
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        names.setdefault(span.name, set()).add(span.trace_id)
        return names

    await until(lambda: "relay" in exported())
    names = exported()
    assert {"dispatch", "inbox send", "inbox handle", "node round trip", "relay"} <= set(names)
    assert set().union(*names.values()) == {uuid.UUID(client_trace_id).bytes}
    count = served.replica.registry.get_sample_value(
        "lingua_tracing_spans_exported_total", {"result": "success"}
    )
    assert count is not None and count >= len(names)


async def test_spans_the_collector_refuses_are_counted_as_lost(
    serve: Serve, peers: Connect, collector: tuple[str, list[ExportTraceServiceRequest]]
) -> None:
    endpoint, received = collector
    Collector.status = 400  # a refusal the exporter does not retry
    try:
        tracing = {"enabled": True, "otlp_endpoint": endpoint, "export_interval_ms": 50}
        served = await serve(tracing=tracing)
        browser = await connected(peers, SimBrowser(served.session_url, SRC, TGT))
        await browser.init()
        await browser.speak(10)  # no node: NO_AVAILABLE_NODE, and a dispatch span all the same
        await browser.wait_type("error")

        def lost() -> float:
            value = served.replica.registry.get_sample_value(
                "lingua_tracing_spans_exported_total", {"result": "failure"}
            )
            return value or 0.0

        await until(lambda: lost() >= 1)
        assert received  # it was sent, and refused
    finally:
        Collector.status = 200
