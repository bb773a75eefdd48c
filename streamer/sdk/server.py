"""The gRPC ``Handler`` server that runs :class:`~streamer.sdk.action.Action` objects.

``Invoke`` validates first (schema, then the action's own rules), then runs
``process`` as a task and streams what it reports: progress events from a bounded
queue (so a chatty action slows down instead of filling memory), then exactly one
result or error. When the caller goes away (the processor cancelled, a deadline
passed) the gRPC call is cancelled and so is the task: no work runs for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from grpc import aio

from streamer import rpc, tracing
from streamer.api.v1 import common_pb2, handler_pb2, handler_pb2_grpc
from streamer.logs import log_context, setup_logging
from streamer.metrics import Health, counter, gauge, histogram, start_http
from streamer.protocol import (
    INVALID_ACTION,
    MAX_DEPTH,
    PROCESSING_FAILED,
    RESULT_TOO_LARGE,
    TIMEOUT,
    VALIDATION_ERROR,
)
from streamer.registry.model import API_VERSION, KIND
from streamer.schema import payload_errors
from streamer.sdk.action import Action, PermanentError, Request, RetryableError, ValidationError

log = logging.getLogger("streamer.sdk")

SERVICE_NAME = handler_pb2.DESCRIPTOR.services_by_name["Handler"].full_name
#: Progress events buffered per call before ``progress()`` waits for the stream.
PROGRESS_QUEUE_SIZE = 256

INVOCATIONS = counter(
    "streamer_handler_invocations_total",
    "Handler invocations by action and outcome (ok, validation_error, failed, timeout, ...).",
    ["action", "outcome"],
)
DURATION = histogram("streamer_handler_duration_seconds", "Time from Invoke to its last event.", ["action"])
IN_FLIGHT = gauge("streamer_handler_in_flight", "Invocations running now.", ["action"])


def _event_error(
    code: str, message: str, *, details: Any = None, retryable: bool = False
) -> handler_pb2.InvokeEvent:
    return handler_pb2.InvokeEvent(error=rpc.error_pb(code, message, details=details, retryable=retryable))


class _BadRequest(Exception):
    def __init__(self, error: common_pb2.Error) -> None:
        super().__init__(error.message)
        self.error = error


def _request(msg: handler_pb2.InvokeRequest) -> Request:
    """The SDK's view of an InvokeRequest; :class:`_BadRequest` when the JSON is unusable."""
    try:
        payload = rpc.loads(msg.payload, default={}, max_depth=MAX_DEPTH)
        metadata = rpc.loads(msg.metadata, default={}, max_depth=MAX_DEPTH)
    except ValueError:
        raise _BadRequest(rpc.error_pb(VALIDATION_ERROR, "Payload or metadata is not valid JSON")) from None
    if not isinstance(payload, dict):
        raise _BadRequest(rpc.error_pb(VALIDATION_ERROR, "Payload must be a JSON object"))
    if not isinstance(metadata, dict):
        metadata = {}
    return Request(
        request_id=msg.request_id,
        action=msg.action,
        payload=payload,
        metadata=metadata,
        user_id=msg.principal.user_id,
        tenant_id=msg.principal.tenant_id,
        permissions=tuple(msg.principal.permissions),
        attempt=max(1, msg.attempt),
        connection_id=msg.connection_id,
    )


def _failure(action: Action, exc: BaseException) -> tuple[common_pb2.Error, str]:
    """The Error an exception from ``validate``/``process`` becomes, and the metric outcome."""
    if isinstance(exc, ValidationError):
        return rpc.error_pb(VALIDATION_ERROR, exc.message, details=exc.details), "validation_error"
    if isinstance(exc, RetryableError):
        return rpc.error_pb(
            PROCESSING_FAILED, str(exc) or "Temporary failure", retryable=True
        ), "retryable_error"
    if isinstance(exc, PermanentError):
        return rpc.error_pb(PROCESSING_FAILED, str(exc) or "Processing failed"), "failed"
    log.error("action %s raised", action.name, exc_info=exc)
    return rpc.error_pb(PROCESSING_FAILED, f"Action {action.name!r} failed with an internal error"), "failed"


async def check_request(action: Action, request: Request) -> common_pb2.Error | None:
    """Schema, then the action's own rules; the Error to answer, or None when valid."""
    errors = payload_errors(action.schema, request.payload)
    if errors:
        first = errors[0]
        where = f"{first['path']}: " if first["path"] else ""
        return rpc.error_pb(
            VALIDATION_ERROR,
            f"Invalid payload for {action.name!r}: {where}{first['message']}",
            details=errors,
        )
    try:
        await action.validate(request)
    except (ValidationError, RetryableError, PermanentError) as exc:
        return _failure(action, exc)[0]
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return _failure(action, exc)[0]
    return None


def action_info(action: Action) -> handler_pb2.ActionInfo:
    return handler_pb2.ActionInfo(
        name=action.name,
        mode=action.mode,
        estimated_duration_seconds=float(action.estimated_duration),
        timeout_seconds=float(action.timeout),
        max_attempts=action.max_attempts,
        required_permissions=list(action.required_permissions),
        payload_schema=rpc.dumps(action.schema) if action.schema is not None else b"",
        description=action.description,
    )


class HandlerServicer(handler_pb2_grpc.HandlerServicer):
    """The ``Handler`` contract over a set of actions (usable on any grpc.aio server)."""

    def __init__(
        self, *, actions: Sequence[Action], name: str = "handler", max_result_bytes: int | None = None
    ) -> None:
        self.name = name
        #: The largest result (JSON bytes) one ``Invoke`` answer may carry; a larger one is
        #: answered ``RESULT_TOO_LARGE`` (not retryable) instead of failing the gRPC write with
        #: RESOURCE_EXHAUSTED, which callers would take for an unreachable handler and retry.
        self.max_result_bytes = max_result_bytes
        self.actions: dict[str, Action] = {}
        for action in actions:
            action.check()
            if action.name in self.actions:
                raise ValueError(f"action {action.name!r} is declared twice")
            self.actions[action.name] = action

    async def Describe(
        self, request: handler_pb2.DescribeRequest, context: aio.ServicerContext
    ) -> handler_pb2.DescribeResponse:
        return handler_pb2.DescribeResponse(
            handler=self.name, actions=[action_info(a) for a in self.actions.values()]
        )

    async def Validate(
        self, request: handler_pb2.InvokeRequest, context: aio.ServicerContext
    ) -> handler_pb2.ValidateResponse:
        action = self.actions.get(request.action)
        if action is None:
            return handler_pb2.ValidateResponse(
                valid=False, error=rpc.error_pb(INVALID_ACTION, f"Unknown action {request.action[:128]!r}")
            )
        try:
            req = _request(request)
            async with asyncio.timeout(action.timeout):
                error = await check_request(action, req)
        except _BadRequest as exc:
            error = exc.error
        except TimeoutError:
            error = rpc.error_pb(TIMEOUT, "Validation timed out", retryable=True)
        return handler_pb2.ValidateResponse(valid=error is None, error=error)

    async def Invoke(  # type: ignore[override]  # writes with context.write(), see below
        self, request: handler_pb2.InvokeRequest, context: aio.ServicerContext
    ) -> None:
        # A coroutine writing with context.write() rather than an async generator: when the
        # call is cancelled, CancelledError lands right here and the finally blocks run at
        # once, instead of whenever a suspended generator happens to be finalized.
        action = self.actions.get(request.action)
        if action is None:
            INVOCATIONS.labels(action="unknown", outcome="invalid_action").inc()
            await context.write(_event_error(INVALID_ACTION, f"Unknown action {request.action[:128]!r}"))
            return
        with (
            log_context(request_id=request.request_id or None, connection_id=request.connection_id or None),
            tracing.rpc_server_span(
                tracing.HANDLER_INVOKE,
                context.invocation_metadata(),
                attributes={"streamer.request_id": request.request_id, "streamer.action": action.name},
            ),
        ):
            started = time.monotonic()
            outcome = "cancelled"
            IN_FLIGHT.labels(action=action.name).inc()
            try:
                outcome = await self._invoke(action, request, context)
            finally:
                IN_FLIGHT.labels(action=action.name).dec()
                INVOCATIONS.labels(action=action.name, outcome=outcome).inc()
                DURATION.labels(action=action.name).observe(time.monotonic() - started)

    async def _invoke(
        self, action: Action, request: handler_pb2.InvokeRequest, context: aio.ServicerContext
    ) -> str:
        """Stream the events of one invocation; returns the outcome (a metric label)."""
        try:
            req = _request(request)
        except _BadRequest as exc:
            await context.write(handler_pb2.InvokeEvent(error=exc.error))
            return "validation_error"
        queue: asyncio.Queue[handler_pb2.InvokeEvent] = asyncio.Queue(maxsize=PROGRESS_QUEUE_SIZE)
        finished = False

        async def progress(
            percentage: float, message: str = "", details: Mapping[str, Any] | None = None
        ) -> None:
            if finished:
                return  # reported after the end (a stray task): nobody is listening any more
            pct = float(percentage)
            pct = 0.0 if math.isnan(pct) else min(100.0, max(0.0, pct))
            tracing.event("progress", {"streamer.percentage": pct, "streamer.message": str(message)})
            await queue.put(
                handler_pb2.InvokeEvent(
                    progress=handler_pb2.Progress(
                        percentage=pct,
                        message=str(message),
                        details=rpc.dumps(dict(details)) if details else b"",
                    )
                )
            )

        async def run() -> tuple[handler_pb2.InvokeEvent, str]:
            limit = asyncio.timeout(action.timeout)
            try:
                async with limit:
                    error = await check_request(action, req)
                    if error is not None:
                        return handler_pb2.InvokeEvent(error=error), "validation_error"
                    with tracing.span(
                        f"process {action.name}",
                        attributes={"streamer.request_id": req.request_id, "streamer.action": action.name},
                    ):
                        result = await action.process(req, progress)
                try:
                    data = rpc.dumps(result)
                except (TypeError, ValueError) as exc:
                    log.error("action %s returned a result that is not JSON: %s", action.name, exc)
                    message = f"Action {action.name!r} returned an invalid result"
                    return _event_error(PROCESSING_FAILED, message), "failed"
                max_bytes = self.max_result_bytes
                if max_bytes is not None and len(data) > max_bytes:
                    message = (
                        f"The result ({len(data)} bytes) is over the handler's {max_bytes}-byte message limit"
                    )
                    details = {"size": len(data), "limit": max_bytes}
                    return handler_pb2.InvokeEvent(
                        error=rpc.error_pb(RESULT_TOO_LARGE, message, details=details)
                    ), "failed"
                return handler_pb2.InvokeEvent(result=handler_pb2.Result(data=data)), "ok"
            except TimeoutError as exc:
                if limit.expired():
                    message = f"Action {action.name!r} timed out after {action.timeout:g}s"
                    return _event_error(TIMEOUT, message, retryable=True), "timeout"
                error, outcome = _failure(action, exc)
                return handler_pb2.InvokeEvent(error=error), outcome
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error, outcome = _failure(action, exc)
                return handler_pb2.InvokeEvent(error=error), outcome

        task = asyncio.create_task(run(), name=f"invoke:{action.name}:{req.request_id}")
        getter: asyncio.Future[handler_pb2.InvokeEvent] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await context.write(getter.result())
                    continue
                getter.cancel()
                finished = True
                while not queue.empty():
                    await context.write(queue.get_nowait())
                event, outcome = task.result()
                await context.write(event)
                return outcome
        finally:
            finished = True
            if getter is not None and not getter.done():
                getter.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=5.0)
                log.info("invocation of %s cancelled by the caller", action.name)


def _duration(seconds: float) -> str:
    """Seconds as a StreamerHandler duration: ``"10m"``, ``"5s"``, ``"0.2s"``."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def registry_document(actions: Sequence[Action], *, name: str, endpoint: str) -> dict[str, Any]:
    """The StreamerHandler document (DESIGN §3) describing ``actions`` served at ``endpoint``."""
    specs: list[dict[str, Any]] = []
    for action in actions:
        spec: dict[str, Any] = {"name": action.name, "mode": action.mode}
        if action.estimated_duration:
            spec["estimatedDuration"] = _duration(action.estimated_duration)
        spec["timeout"] = _duration(action.timeout)
        spec["maxAttempts"] = action.max_attempts
        if action.required_permissions:
            spec["requiredPermissions"] = list(action.required_permissions)
        if action.priority:
            spec["priority"] = action.priority
        if action.description:
            spec["description"] = action.description
        if action.schema is not None:
            spec["payloadSchema"] = dict(action.schema)
        specs.append(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"actions": specs},
        "status": {"endpoint": endpoint},
    }


class HandlerServer:
    """A grpc.aio server for some actions, with health, reflection and (optionally) /metrics."""

    def __init__(
        self, *, actions: Sequence[Action], name: str = "handler", max_message_bytes: int = 4 * 1024 * 1024
    ) -> None:
        self.name = name
        # The answer's protobuf envelope (event, field tags) needs a few bytes besides the JSON.
        self.servicer = HandlerServicer(actions=actions, name=name, max_result_bytes=max_message_bytes - 1024)
        self.max_message_bytes = max_message_bytes
        self.health = Health()
        self.port: int | None = None
        self.http_port: int | None = None
        self._server: aio.Server | None = None
        self._health_servicer: Any = None
        self._http: web.AppRunner | None = None

    @property
    def actions(self) -> list[Action]:
        return list(self.servicer.actions.values())

    async def start(self, *, host: str = "127.0.0.1", port: int = 0, http_port: int | None = None) -> int:
        """Start serving; returns the bound gRPC port (``port=0`` picks a free one)."""
        server = rpc.create_server(max_message_bytes=self.max_message_bytes)
        handler_pb2_grpc.add_HandlerServicer_to_server(self.servicer, server)
        self._health_servicer = rpc.finish_server(server, service_names=[SERVICE_NAME])
        self.port = rpc.bind(server, host=host, port=port, peer="handler")
        await server.start()
        self._server = server
        await rpc.set_serving(self._health_servicer, service_names=[SERVICE_NAME], serving=True)
        if http_port is not None:
            self._http, self.http_port = await start_http(health=self.health, host=host, port=http_port)
        self.health.set_ready()
        log.info(
            "handler %s serving %d action(s) on %s:%d", self.name, len(self.servicer.actions), host, self.port
        )
        return self.port

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop taking calls, give running ones ``grace`` seconds, then cancel them."""
        self.health.set_not_ready("draining")
        if self._health_servicer is not None:
            with contextlib.suppress(Exception):
                await rpc.set_serving(self._health_servicer, service_names=[SERVICE_NAME], serving=False)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None

    def registry_document(self, *, endpoint: str) -> dict[str, Any]:
        """The StreamerHandler document for the file registry (status.endpoint = ``endpoint``)."""
        return registry_document(self.actions, name=self.name, endpoint=endpoint)


async def _serve_until_signal(
    server: HandlerServer, *, host: str, port: int, http_port: int | None, grace: float
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await server.start(host=host, port=port, http_port=http_port)
    await stop.wait()
    log.info("stopping handler %s (grace %ss)", server.name, grace)
    await server.stop(grace=grace)
    return 0


def serve(
    *,
    actions: Sequence[Action],
    name: str = "handler",
    host: str = "0.0.0.0",
    port: int = 50061,
    http_port: int | None = 9090,
) -> int:
    """Serve ``actions`` until SIGTERM/SIGINT, then stop gracefully; returns an exit code.

    Logging follows ``STREAMER_LOG_LEVEL``/``STREAMER_LOG_JSON``; the grace period is
    ``STREAMER_DRAIN_SECONDS``; the gRPC message cap ``STREAMER_GRPC_MAX_MESSAGE_BYTES``.
    """
    from streamer.config import ConfigError, load_settings

    try:
        settings = load_settings()
        rpc.configure(settings)
    except ConfigError as exc:
        print(f"streamer handler: {exc}", file=sys.stderr)
        return 2
    setup_logging(service=f"handler:{name}", level=settings.log_level, json_format=settings.log_json)
    tracing.setup(f"handler-{name}")  # off unless the OTEL_* variables ask for it
    try:
        server = HandlerServer(actions=actions, name=name, max_message_bytes=settings.grpc_max_message_bytes)
    except ValueError as exc:
        print(f"streamer handler: {exc}", file=sys.stderr)
        return 2
    main = _serve_until_signal(
        server, host=host, port=port, http_port=http_port, grace=settings.drain_seconds
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


__all__ = ["HandlerServer", "HandlerServicer", "action_info", "check_request", "registry_document", "serve"]
