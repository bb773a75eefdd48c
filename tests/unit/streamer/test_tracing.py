"""streamer.tracing without a collector: when it turns on, what a stored request carries, how a
client's traceparent is continued, and trace ids in log lines. (One trace across the real
services: tests/e2e/test_e2e_tracing.py.)"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamer import tracing
from streamer.logs import JsonFormatter, TextFormatter
from streamer.store.requests import RequestRecord


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_off_unless_the_standard_variables_ask(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


def test_setup_does_nothing_when_off() -> None:
    assert tracing.setup("router", environ={}) is False
    assert not tracing.enabled()


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    """A private provider (the global one is set once per process, by setup())."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def test_a_request_stores_the_context_it_was_created_in(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    tracer, _ = spans
    untraced = RequestRecord.new(
        request_id="r0", action="a", user_id="u", tenant_id="t", connection_id="c", payload={}
    )
    assert untraced.traceparent is None
    with tracer.start_as_current_span("route") as span:
        record = RequestRecord.new(
            request_id="r1", action="a", user_id="u", tenant_id="t", connection_id="c", payload={}
        )
    ctx = span.get_span_context()
    assert record.traceparent is not None
    assert record.traceparent.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    assert RequestRecord.from_item(record.to_item()).traceparent == record.traceparent
    # and work on the stored request joins that trace, as a child of that span
    parent = tracing._context_of(record.traceparent)
    assert parent is not None
    with tracer.start_as_current_span("process", context=parent) as child:
        assert child.get_span_context().trace_id == ctx.trace_id
    assert child.parent is not None and child.parent.span_id == ctx.span_id  # type: ignore[attr-defined]
    assert tracing._context_of("garbage") is None and tracing._context_of(None) is None


def test_log_lines_carry_the_trace_id(spans: tuple[trace.Tracer, InMemorySpanExporter]) -> None:
    tracer, _ = spans
    record = logging.makeLogRecord({"msg": "hello", "levelname": "INFO", "name": "t"})
    assert "trace_id" not in json.loads(JsonFormatter(service="x").format(record))
    with tracer.start_as_current_span("work") as span:
        entry = json.loads(JsonFormatter(service="x").format(record))
        text = TextFormatter().format(record)
    tid = f"{span.get_span_context().trace_id:032x}"
    assert entry["trace_id"] == tid
    assert f"trace={tid}" in text
