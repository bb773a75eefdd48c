"""Calling handlers from the router: one channel per endpoint, errors mapped to codes.

A handler that is down must be reported at once as a retryable
``SERVICE_UNAVAILABLE``, not after the action's whole timeout, so calls do not wait
for the channel to become ready. The deadline of a sync call is the action's
timeout, cut to what is left of the caller's own deadline.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc import aio

from services.router.call import Call
from streamer import rpc
from streamer.api.v1 import common_pb2, handler_pb2, handler_pb2_grpc
from streamer.protocol import (
    ERROR_CODES,
    INTERNAL_ERROR,
    PROCESSING_FAILED,
    SERVICE_UNAVAILABLE,
    TIMEOUT,
    VALIDATION_ERROR,
    error_message,
    response_message,
)
from streamer.registry import ActionSpec

log = logging.getLogger(__name__)

#: The longest the router waits for a handler's Validate answer before queuing an
#: async request anyway (the processor validates again when it invokes).
VALIDATE_DEADLINE_SECONDS = 1.0


class HandlerChannels:
    """Long-lived channels to handler endpoints, opened on first use."""

    def __init__(self, *, max_message_bytes: int = rpc.DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._stubs: dict[str, tuple[aio.Channel, Any]] = {}  # HandlerStub over an aio channel

    def stub(self, endpoint: str) -> Any:
        found = self._stubs.get(endpoint)
        if found is None:
            channel = rpc.channel(endpoint, max_message_bytes=self.max_message_bytes, peer="handler")
            found = (channel, handler_pb2_grpc.HandlerStub(channel))
            self._stubs[endpoint] = found
        return found[1]

    async def close(self) -> None:
        stubs, self._stubs = self._stubs, {}
        for channel, _ in stubs.values():
            await channel.close(None)


def invoke_request(call: Call) -> handler_pb2.InvokeRequest:
    return handler_pb2.InvokeRequest(
        request_id=call.request_id,
        action=call.action,
        payload=rpc.dumps(call.payload),
        metadata=rpc.dumps(call.metadata),
        principal=common_pb2.Principal(
            user_id=call.user_id, tenant_id=call.tenant_id, permissions=list(call.permissions)
        ),
        attempt=1,
        connection_id=call.connection_id,
    )


def _details(raw: bytes) -> Any:
    try:
        return rpc.loads(raw)
    except ValueError:
        return None


def error_frame(call: Call, error: common_pb2.Error) -> dict[str, Any]:
    """A handler's Error as an ``error`` frame (unknown codes become PROCESSING_FAILED)."""
    code = error.code if error.code in ERROR_CODES else PROCESSING_FAILED
    return error_message(
        code,
        error.message or "Handler failed",
        request_id=call.request_id,
        details=_details(error.details),
        retryable=error.retryable,
    )


def rpc_error_frame(call: Call, spec: ActionSpec, exc: aio.AioRpcError, *, deadline: float) -> dict[str, Any]:
    """A failed handler call as an ``error`` frame: the code says whose fault and whether to retry."""
    status = exc.code()
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return error_message(
            TIMEOUT,
            f"Action {call.action!r} did not answer within {deadline:g}s",
            request_id=call.request_id,
            retryable=True,
        )
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED):
        log.warning(
            "handler unavailable",
            extra={"handler": spec.handler, "endpoint": spec.endpoint, "grpc_status": status.name},
        )
        return error_message(
            SERVICE_UNAVAILABLE,
            f"The handler of {call.action!r} is unavailable; try again",
            request_id=call.request_id,
            retryable=True,
        )
    log.error(
        "handler call failed",
        extra={"handler": spec.handler, "endpoint": spec.endpoint, "grpc_status": status.name},
    )
    return error_message(
        INTERNAL_ERROR, f"The handler of {call.action!r} failed to answer", request_id=call.request_id
    )


def _unavailable(call: Call, why: str) -> dict[str, Any]:
    return error_message(SERVICE_UNAVAILABLE, why, request_id=call.request_id, retryable=True)


async def invoke_sync(channels: HandlerChannels, spec: ActionSpec, call: Call) -> dict[str, Any]:
    """Run a sync action: the handler's result as ``response``, or an ``error`` frame.

    Progress events of a sync action are not forwarded: a sync answer is one frame.
    """
    if not spec.endpoint:
        return _unavailable(call, f"The handler of {call.action!r} has no endpoint yet")
    deadline = spec.timeout
    if call.deadline is not None:
        deadline = max(0.001, min(deadline, call.deadline))
    stream = channels.stub(spec.endpoint).Invoke(invoke_request(call), timeout=deadline, wait_for_ready=False)
    try:
        async for event in stream:
            kind = event.WhichOneof("event")
            if kind == "result":
                try:
                    data = rpc.loads(event.result.data)
                except ValueError:
                    return error_message(
                        PROCESSING_FAILED, "The handler answered invalid JSON", request_id=call.request_id
                    )
                return response_message(call.request_id, data)
            if kind == "error":
                return error_frame(call, event.error)
    except aio.AioRpcError as exc:
        return rpc_error_frame(call, spec, exc, deadline=deadline)
    finally:
        stream.cancel()
    return error_message(
        INTERNAL_ERROR, f"The handler of {call.action!r} ended without an answer", request_id=call.request_id
    )


async def validate_remote(channels: HandlerChannels, spec: ActionSpec, call: Call) -> dict[str, Any] | None:
    """Ask the handler to check the payload (its own rules beyond the schema).

    Returns a ``VALIDATION_ERROR`` frame when the handler refuses it; None when it
    accepts it *or cannot be asked* — an async request must be queued even while its
    handler is down or scaling, and the processor's Invoke validates again.
    """
    if not spec.endpoint:
        return None
    try:
        answer = await channels.stub(spec.endpoint).Validate(
            invoke_request(call), timeout=VALIDATE_DEADLINE_SECONDS, wait_for_ready=False
        )
    except aio.AioRpcError as exc:
        log.info(
            "handler validation skipped", extra={"handler": spec.handler, "grpc_status": exc.code().name}
        )
        return None
    if answer.valid or answer.error.code != VALIDATION_ERROR:
        return None
    return error_frame(call, answer.error)


__all__ = [
    "VALIDATE_DEADLINE_SECONDS",
    "HandlerChannels",
    "error_frame",
    "invoke_request",
    "invoke_sync",
    "rpc_error_frame",
    "validate_remote",
]
