"""OpenTelemetry tracing: one trace per request, from the WebSocket frame to the handler.

Off by default. A process turns it on at start (:func:`setup`, called by
:mod:`streamer.runtime` and the handler SDK's ``serve()``) when the standard variables ask
for it:

- ``OTEL_TRACES_EXPORTER``: ``otlp`` or ``console`` (``none``, the default here, keeps it off
  unless an OTLP endpoint is set);
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: a collector; setting
  one is enough to turn tracing on;
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` / ``..._TRACES_PROTOCOL``: ``http/protobuf`` (the default, as
  the specification says) or ``grpc``;
- ``OTEL_SERVICE_NAME`` (default ``streamer-<service>``), ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``; by default every trace is kept, but no trace starts at
  an outgoing call: background DynamoDB polls are not requests), ``OTEL_BSP_*``;
  ``OTEL_SDK_DISABLED=true`` wins.

When on, the official instrumentations trace every gRPC call but health checks (client and
server, with the W3C ``traceparent`` in the call's metadata) and aiohttp (client, and server requests other
than ``/metrics``, ``/healthz`` and ``/readyz``). The services add what no instrumentation
can know, through this module only:

- connect starts a trace per client frame (:func:`frame_span`) — or continues the
  ``traceparent`` a client put in the frame's ``metadata``;
- a stored request carries the context it was created in (:func:`current_traceparent`, saved
  by :meth:`RequestRecord.new <streamer.store.requests.RequestRecord.new>`), so the processor's
  work joins the same trace (:func:`request_span`) whether the request came from the stream,
  the sweeper or a direct offer;
- the handler SDK wraps ``process`` in a span and records progress as span events.

Log lines carry the current ``trace_id`` (:func:`current_trace_id`, used by
:mod:`streamer.logs`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

log = logging.getLogger(__name__)

TRACER_NAME = "streamer"
TRACEPARENT = "traceparent"
HANDLER_INVOKE = "/streamer.v1.Handler/Invoke"
#: Observability routes are scraped every few seconds; a span each would drown the traces.
EXCLUDED_URLS = "/metrics,/healthz,/readyz"
_enabled = False


def _env(name: str, environ: Mapping[str, str]) -> str:
    return (environ.get(name) or "").strip()


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard ``OTEL_*`` variables ask for traces to be exported."""
    env = os.environ if environ is None else environ
    if _env("OTEL_SDK_DISABLED", env).lower() == "true":
        return False
    exporter = _env("OTEL_TRACES_EXPORTER", env).lower()
    if exporter and exporter != "none":
        return True
    if exporter == "none":
        return False
    return bool(_env("OTEL_EXPORTER_OTLP_ENDPOINT", env) or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env))


def enabled() -> bool:
    """True once :func:`setup` turned tracing on in this process."""
    return _enabled


def _exporter(env: Mapping[str, str]) -> Any:
    kind = _env("OTEL_TRACES_EXPORTER", env).lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: only otlp, console or none are supported")
    protocol = (
        _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env) or _env("OTEL_EXPORTER_OTLP_PROTOCOL", env)
    ) or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf or grpc")


def _sampler(env: Mapping[str, str]) -> Any:
    """``OTEL_TRACES_SAMPLER`` when set; else every trace, but none that would start at an
    outgoing call (DynamoDB polls of the stream reader, lease renewals, JWKS refreshes are
    background work, not requests: inside a request's span they are still recorded)."""
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_ON,
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
        _get_from_env_or_default,
    )

    if _env("OTEL_TRACES_SAMPLER", env):
        return _get_from_env_or_default()

    class NoClientRoots(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind is SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return ALWAYS_ON.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return "NoClientRoots"

    return ParentBased(root=NoClientRoots())


def setup(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on for this process when the ``OTEL_*`` variables ask for it; idempotent.

    Call it before any gRPC channel, gRPC server or aiohttp application is created (the
    instrumentations wrap their constructors). Returns whether tracing is on.
    """
    global _enabled
    env = os.environ if environ is None else environ
    if _enabled or not wanted(env):
        return _enabled
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.grpc.filters import (
        any_of,
        full_method_name,
        health_check,
        negate,
        service_prefix,
    )
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = _env("OTEL_SERVICE_NAME", env) or f"streamer-{service}"
    resource = Resource.create({"service.name": name, "service.namespace": "streamer"}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource, sampler=_sampler(env))
    provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
    trace.set_tracer_provider(provider)
    os.environ.setdefault("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS", EXCLUDED_URLS)
    # Health checks and reflection are probes, not requests.
    probes = any_of(health_check(), service_prefix("grpc.reflection"))
    GrpcAioInstrumentorClient(filter_=negate(probes)).instrument()
    # The instrumentation's server side cannot wrap a streaming method that writes with
    # context.write() (the SDK's Invoke): that one opens its span itself (rpc_server_span).
    GrpcAioInstrumentorServer(filter_=negate(any_of(probes, full_method_name(HANDLER_INVOKE)))).instrument()
    AioHttpClientInstrumentor().instrument()
    AioHttpServerInstrumentor().instrument()
    _enabled = True
    log.info("tracing on", extra={"otel_service_name": name})
    return True


def shutdown() -> None:
    """Export what is buffered (at process exit)."""
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "shutdown", None)
    if callable(flush):
        with contextlib.suppress(Exception):
            flush()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_trace_id() -> str | None:
    """The current trace id (32 hex digits), None outside a sampled, valid span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}"


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to store with a request; None if none."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def _context_of(traceparent: Any) -> otel_context.Context | None:
    if not isinstance(traceparent, str) or not traceparent:
        return None
    ctx = propagate.extract({TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def _attributes(
    request_id: str | None, action: str | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if request_id:
        attributes["streamer.request_id"] = request_id
    if action:
        attributes["streamer.action"] = action
    for key, value in (extra or {}).items():
        if value is not None:
            attributes[key] = value
    return attributes


@contextlib.contextmanager
def frame_span(
    action: str,
    *,
    request_id: str | None,
    metadata: Mapping[str, Any] | None,
    connection_id: str | None = None,
) -> Iterator[Span]:
    """The root of a request's trace: one client frame, in connect.

    A valid ``traceparent`` in the frame's ``metadata`` is continued; otherwise a new trace
    starts (never the WebSocket's own long-lived request span).
    """
    parent = _context_of((metadata or {}).get(TRACEPARENT)) or otel_context.Context()
    attributes = _attributes(request_id, action, {"streamer.connection_id": connection_id})
    with tracer().start_as_current_span(
        f"frame {action}", context=parent, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


@contextlib.contextmanager
def request_span(
    name: str,
    *,
    traceparent: Any,
    request_id: str | None = None,
    action: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """Work on a stored request, joined to the trace it was created in (``traceparent``)."""
    parent = _context_of(traceparent)
    with tracer().start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=_attributes(request_id, action, attributes)
    ) as span:
        yield span


@contextlib.contextmanager
def rpc_server_span(
    full_method: str, metadata: Any, *, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span]:
    """A gRPC server span for a method the instrumentation leaves out, continuing the caller's
    context from the call's metadata (``context.invocation_metadata()``)."""
    carrier = {str(k): v for k, v in (metadata or ()) if isinstance(v, str)}
    service, _, method = full_method.lstrip("/").rpartition("/")
    base = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    with tracer().start_as_current_span(
        full_method.lstrip("/"),
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={**base, **dict(attributes or {})},
    ) as current:
        yield current


@contextlib.contextmanager
def span(name: str, *, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A child of the current span."""
    with tracer().start_as_current_span(name, attributes=dict(attributes or {})) as current:
        yield current


def event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """An event on the current span (e.g. a progress report); nothing without a span."""
    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(name, attributes=dict(attributes or {}))


__all__ = [
    "TRACEPARENT",
    "current_trace_id",
    "current_traceparent",
    "enabled",
    "event",
    "frame_span",
    "request_span",
    "rpc_server_span",
    "setup",
    "shutdown",
    "span",
    "tracer",
    "wanted",
]
