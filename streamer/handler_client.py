"""Call handler pods: the one client the router (sync, Validate) and the processor (async) share.

A handler's ``Invoke`` is a server stream: progress events, then exactly one ``result``
or ``error``. :meth:`HandlerClient.invoke` turns it into typed events — any number of
:class:`Progress`, then exactly one :class:`Result` or :class:`Failure` — whatever
happened on the way, so callers only decide what an ending *means* for them:

===============================================  =============================================
what happened                                    the ending
===============================================  =============================================
``result`` with JSON data                        :class:`Result`
``result`` that is not JSON                      ``PROCESSING_FAILED``, not retryable
the handler's ``error``                          its code (``PROCESSING_FAILED`` when it is not
                                                 a documented code), message, details;
                                                 retryable when the handler says so or the
                                                 code is ``TIMEOUT``
``DEADLINE_EXCEEDED``                            ``TIMEOUT``, retryable
``RESOURCE_EXHAUSTED`` for a message over       ``RESULT_TOO_LARGE``, not retryable (the same
the caller's or the handler's gRPC limit         answer would be as large again)
``UNAVAILABLE``, ``RESOURCE_EXHAUSTED``,         ``SERVICE_UNAVAILABLE``, retryable
``CANCELLED``
other codes in :data:`streamer.rpc.RETRYABLE`    ``INTERNAL_ERROR``, retryable (died mid-call)
any other gRPC code                              ``INTERNAL_ERROR``, not retryable
the stream ended without an ending               ``INTERNAL_ERROR``, retryable
===============================================  =============================================

A gRPC failure carries ``grpc_status`` (and ``details = {"grpc_status": ...}``). Calls
never wait for a channel to become ready: a handler that is down is reported at once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc
from grpc import aio

from streamer import rpc
from streamer.api.v1 import common_pb2, handler_pb2, handler_pb2_grpc
from streamer.protocol import (
    ERROR_CODES,
    INTERNAL_ERROR,
    PROCESSING_FAILED,
    RESULT_TOO_LARGE,
    SERVICE_UNAVAILABLE,
    TIMEOUT,
)

log = logging.getLogger(__name__)

#: gRPC codes that mean the handler could not be reached or shed the call.
_UNREACHABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)


class _Request(Protocol):
    @property
    def request_id(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def payload(self) -> Any: ...
    @property
    def metadata(self) -> Any: ...
    @property
    def user_id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def permissions(self) -> Sequence[str]: ...
    @property
    def connection_id(self) -> str: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Invocation:
    """What a handler is asked to run, and for whom."""

    request_id: str
    action: str
    payload: Any
    metadata: Any
    user_id: str
    tenant_id: str
    permissions: Sequence[str] = ()
    attempt: int = 1
    connection_id: str = ""

    @classmethod
    def of(cls, source: _Request, *, attempt: int = 1) -> Invocation:
        """The invocation of a routed call or a stored request."""
        return cls(
            request_id=source.request_id,
            action=source.action,
            payload=source.payload,
            metadata=source.metadata,
            user_id=source.user_id,
            tenant_id=source.tenant_id,
            permissions=source.permissions,
            attempt=attempt,
            connection_id=source.connection_id,
        )

    def to_pb(self) -> handler_pb2.InvokeRequest:
        return handler_pb2.InvokeRequest(
            request_id=self.request_id,
            action=self.action,
            payload=rpc.dumps(self.payload if self.payload is not None else {}),
            metadata=rpc.dumps(self.metadata if self.metadata is not None else {}),
            principal=common_pb2.Principal(
                user_id=self.user_id, tenant_id=self.tenant_id, permissions=list(self.permissions)
            ),
            attempt=self.attempt,
            connection_id=self.connection_id,
        )


@dataclasses.dataclass(frozen=True)
class Progress:
    percentage: float
    message: str
    details: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    data: Any
    #: Bytes of the JSON the handler sent (the processor refuses results over its limit).
    size: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Failure:
    """The call ended without a result (see the module table for the codes)."""

    code: str
    message: str
    details: Any = None
    retryable: bool = False
    #: The gRPC status name when the call itself failed; "" for the handler's own error.
    grpc_status: str = ""

    @property
    def timed_out(self) -> bool:
        return self.code == TIMEOUT


Event = Progress | Result | Failure


def _json(raw: bytes) -> Any:
    try:
        return rpc.loads(raw)
    except ValueError:
        return None


def handler_failure(error: common_pb2.Error) -> Failure:
    """A handler's own ``Error``; a code outside the protocol's becomes ``PROCESSING_FAILED``."""
    return Failure(
        code=error.code if error.code in ERROR_CODES else PROCESSING_FAILED,
        message=error.message or "Handler failed",
        details=_json(error.details),
        retryable=bool(error.retryable) or error.code == TIMEOUT,
    )


def rpc_failure(exc: aio.AioRpcError, *, action: str, timeout: float) -> Failure:
    """A failed gRPC call to a handler, classified once for every caller."""
    status = exc.code()
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (exc.details() or ""):
        # gRPC's own words for a message over max_(send|receive)_message_length.
        return Failure(
            code=RESULT_TOO_LARGE,
            message=f"The answer of {action!r} is over the gRPC message limit ({exc.details()})",
            details={"grpc_status": status.name},
            grpc_status=status.name,
        )
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        code, message = TIMEOUT, f"Action {action!r} did not answer within {timeout:g}s"
    elif status in _UNREACHABLE:
        code, message = SERVICE_UNAVAILABLE, f"The handler of {action!r} is unavailable; try again"
    else:
        code, message = INTERNAL_ERROR, f"The handler of {action!r} failed to answer ({status.name})"
    return Failure(
        code=code,
        message=message,
        details={"grpc_status": status.name},
        retryable=status in rpc.RETRYABLE,
        grpc_status=status.name,
    )


def _event(event: handler_pb2.InvokeEvent) -> Event | None:
    kind = event.WhichOneof("event")
    if kind == "progress":
        details = _json(event.progress.details) if event.progress.details else None
        return Progress(
            event.progress.percentage, event.progress.message, details if isinstance(details, dict) else None
        )
    if kind == "result":
        try:
            return Result(rpc.loads(event.result.data), size=len(event.result.data))
        except ValueError:
            return Failure(code=PROCESSING_FAILED, message="The handler answered invalid JSON")
    if kind == "error":
        return handler_failure(event.error)
    return None


class HandlerClient:
    """Invoke and Validate on handler endpoints over one shared :class:`~streamer.rpc.ChannelPool`."""

    def __init__(self, *, max_message_bytes: int = rpc.DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.channels: rpc.ChannelPool[handler_pb2_grpc.HandlerStub] = rpc.ChannelPool(
            handler_pb2_grpc.HandlerStub, max_message_bytes=max_message_bytes, peer="handler"
        )

    async def invoke(self, endpoint: str, request: Invocation, *, timeout: float) -> AsyncIterator[Event]:
        """Progress events, then exactly one :class:`Result` or :class:`Failure`.

        Closing the iterator early (or cancelling its consumer) cancels the call, which
        the handler SDK turns into cancelling the work.
        """
        # grpc-stubs types the sync API; over a grpc.aio channel this is an async stream call.
        call: Any = self.channels.stub(endpoint).Invoke(
            request.to_pb(), timeout=timeout, wait_for_ready=False
        )
        try:
            async for raw in call:
                event = _event(raw)
                if isinstance(event, Progress):
                    yield event
                elif event is not None:
                    call.cancel()  # the ending is in: nothing more to read
                    yield event
                    return
            yield Failure(
                code=INTERNAL_ERROR,
                message=f"The handler of {request.action!r} ended without an answer",
                retryable=True,
            )
        except aio.AioRpcError as exc:
            call.cancel()
            failure = rpc_failure(exc, action=request.action, timeout=timeout)
            if not failure.timed_out:
                log.log(
                    logging.WARNING if failure.retryable else logging.ERROR,
                    "handler call failed",
                    extra={
                        "action": request.action,
                        "endpoint": endpoint,
                        "grpc_status": failure.grpc_status,
                    },
                )
            yield failure
        finally:
            call.cancel()

    async def validate(self, endpoint: str, request: Invocation, *, timeout: float) -> Failure | None:
        """None when the handler accepts the payload; its refusal, or why it could not be asked."""
        try:
            answer = await self.channels.stub(endpoint).Validate(  # type: ignore[misc]
                request.to_pb(), timeout=timeout, wait_for_ready=False
            )
        except aio.AioRpcError as exc:
            return rpc_failure(exc, action=request.action, timeout=timeout)
        return None if answer.valid else handler_failure(answer.error)

    async def close(self) -> None:
        await self.channels.close()


__all__ = [
    "Event",
    "Failure",
    "HandlerClient",
    "Invocation",
    "Progress",
    "Result",
    "handler_failure",
    "rpc_failure",
]
