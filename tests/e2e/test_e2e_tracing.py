"""One async request, one trace: connect, router, processor and the handler all join it.

The stack runs with tracing turned on the standard way (``OTEL_TRACES_EXPORTER=otlp``,
``OTEL_EXPORTER_OTLP_ENDPOINT``) and exports over OTLP/HTTP to a small receiver in this test
(decoding the real protobuf ``ExportTraceServiceRequest``). An async request's spans must form
one trace across every service: the WebSocket frame in connect, the Route call in the router
(which stores the request with its trace context), the processor's work on the stored
request, the handler's Invoke and its ``process`` span with one event per progress report.
This holds whether the processor got the request by the router's direct offer or from the
table with no offer at all. A client's own ``traceparent`` (in the frame's ``metadata``) is
continued, not replaced.
"""

from __future__ import annotations

import dataclasses
import pathlib
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from e2e_helpers import connect, eventually, running_stack
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from streamer.local.stack import LocalStack


@dataclasses.dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver (POST /v1/traces, protobuf) that keeps every span."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    async def traces(self, request: web.Request) -> web.Response:
        body = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in body.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    self.spans.append(
                        Span(
                            service=str(resource.get("service.name")),
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            events=[
                                (e.name, {a.key: _value(a.value) for a in e.attributes}) for e in s.events
                            ],
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def of_request(self, request_id: str) -> list[Span]:
        return [s for s in self.spans if s.attributes.get("streamer.request_id") == request_id]

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", rec.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield rec, port
    finally:
        await runner.cleanup()


def _otel_env(port: int) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


@pytest.fixture(scope="module")
async def traced_stack(
    dynamodb: str, tmp_path_factory: pytest.TempPathFactory, receiver: tuple[Receiver, int]
) -> AsyncIterator[LocalStack]:
    """The router offers each new async request to a processor (direct dispatch)."""
    run_dir = pathlib.Path(tmp_path_factory.mktemp("traced"))
    async with running_stack(dynamodb, run_dir, env=_otel_env(receiver[1])) as st:
        yield st


REPORT = {"start_date": "2026-01-01", "end_date": "2026-01-31", "format": "csv", "report_type": "sales"}
SERVICES = {"streamer-connect", "streamer-router", "streamer-processor"}


def _is_handler(service: str) -> bool:
    return service.startswith("streamer-handler-")


async def test_an_async_request_is_one_trace_across_every_service(
    traced_stack: LocalStack, receiver: tuple[Receiver, int]
) -> None:
    spans = await _one_async_trace(traced_stack, receiver[0])
    assert any(s.name == "/streamer.v1.Processor/Offer" for s in spans), "taken by direct dispatch"


async def test_a_request_taken_from_the_stream_joins_the_same_trace(
    dynamodb: str, tmp_path_factory: pytest.TempPathFactory, receiver: tuple[Receiver, int]
) -> None:
    """No direct dispatch (no processor addresses): the processor finds the request in the
    table (its stream, or the sweeper), and still continues the trace stored with it."""
    env = {**_otel_env(receiver[1]), "STREAMER_PROCESSOR_ADDRESSES": ""}
    run_dir = pathlib.Path(tmp_path_factory.mktemp("traced-stream"))
    async with running_stack(dynamodb, run_dir, env=env) as stack:
        spans = await _one_async_trace(stack, receiver[0])
    assert not any(s.name == "/streamer.v1.Processor/Offer" for s in spans), "no offer was made"


async def _one_async_trace(stack: LocalStack, rec: Receiver) -> list[Span]:
    """Run one async request; check its spans form one trace across every service."""
    traced_stack = stack
    request_id = f"traced-{uuid.uuid4().hex[:10]}"
    async with connect(traced_stack) as client:
        handle = await client.start("generate_report", REPORT, request_id=request_id)
        await handle.result(timeout=90)

    def complete() -> list[Span] | None:
        mine = rec.of_request(request_id)
        frames = [s for s in mine if s.service == "streamer-connect"]
        if not frames:
            return None
        services = {s.service for s in rec.trace(frames[0].trace_id)}
        if not (services >= SERVICES and any(_is_handler(s) for s in services)):
            return None
        return mine

    try:
        mine = await eventually(complete, timeout=60, interval=0.2)
    except AssertionError:
        seen = sorted({(s.service, s.name, s.trace_id[:8]) for s in rec.spans})
        raise AssertionError(f"spans of {request_id}: {rec.of_request(request_id)}; all: {seen}") from None
    trace_ids = {s.trace_id for s in mine}
    assert len(trace_ids) == 1, {(s.service, s.name, s.trace_id) for s in mine}
    (trace_id,) = trace_ids
    spans = rec.trace(trace_id)
    by_id = {s.span_id: s for s in spans}

    assert {s.service for s in spans} >= SERVICES
    router = [s for s in spans if s.service == "streamer-router"]
    assert any(s.name == "/streamer.v1.Router/Route" for s in router), sorted(s.name for s in router)
    # one root: the client's frame in connect
    roots = [s for s in spans if not s.parent_id]
    assert [(r.service, r.name) for r in roots] == [("streamer-connect", "frame generate_report")]

    # every other span hangs off a span of the same trace (nothing dangles)
    def dangling() -> list[Span]:
        ids = {s.span_id for s in rec.trace(trace_id)}
        return [s for s in rec.trace(trace_id) if s.parent_id and s.parent_id not in ids]

    try:
        await eventually(lambda: not dangling(), timeout=30)
    except AssertionError:
        raise AssertionError(f"spans whose parent is not in the trace: {dangling()}") from None
    spans = rec.trace(trace_id)
    by_id = {s.span_id: s for s in spans}

    def ancestors(span: Span) -> list[str]:
        out = []
        while span.parent_id:
            span = by_id[span.parent_id]
            out.append(f"{span.service}:{span.name}")
        return out

    processing = [
        s for s in spans if s.service == "streamer-processor" and s.name == "process generate_report"
    ]
    assert processing, sorted({(s.service, s.name) for s in spans})
    # the processor's work descends from the router's Route call, through the stored request
    assert any(a.startswith("streamer-router:") for a in ancestors(processing[0]))
    handler_process = [s for s in spans if _is_handler(s.service) and s.name == "process generate_report"]
    assert handler_process, sorted({(s.service, s.name) for s in spans})
    chain = ancestors(handler_process[0])
    assert "streamer-processor:process generate_report" in chain
    assert chain[-1] == "streamer-connect:frame generate_report"
    # progress reports are span events of the handler's process span
    progress = [e for e in handler_process[0].events if e[0] == "progress"]
    assert len(progress) >= 2
    assert progress[-1][1]["streamer.percentage"] == 100
    return spans


async def test_a_client_traceparent_is_continued(
    traced_stack: LocalStack, receiver: tuple[Receiver, int]
) -> None:
    rec = receiver[0]
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    request_id = f"parent-{uuid.uuid4().hex[:10]}"
    async with connect(traced_stack) as client:
        await client.request(
            "echo",
            {"message": "hi"},
            request_id=request_id,
            metadata={"traceparent": f"00-{trace_id}-{parent}-01"},
        )

    def frame() -> list[Span]:
        return [s for s in rec.of_request(request_id) if s.service == "streamer-connect"]

    (span,) = await eventually(frame, timeout=60, interval=0.2)
    assert span.trace_id == trace_id and span.parent_id == parent
    # and the sync call to the handler is in it too
    await eventually(lambda: any(_is_handler(s.service) for s in rec.trace(trace_id)), timeout=60)
