"""The backend SDK: publish to users' sockets and submit requests on their behalf.

Both clients talk to the router's ``Publish`` and ``Submit`` (``docs/backends.md``):
:class:`AsyncBackend` on the caller's event loop, :class:`Backend` for synchronous code
(it runs an :class:`AsyncBackend` on a private event loop in a background thread).

- **Channel**: :func:`streamer.rpc.channel` — the services' own options, message cap,
  and mutual TLS when ``STREAMER_TLS_*`` are configured (call
  :func:`streamer.rpc.configure_tls` first; the certificate names the caller).
- **Service token**: with ``STREAMER_SERVICE_TOKEN_SECRET`` (and
  ``STREAMER_SERVICE_NAME``, the caller's name) every call carries a short-lived signed
  token (see :mod:`streamer.callers`).
- **Deadlines**: every call has one (``timeout``, 10 s by default).
- **Retries**: ``Submit`` is idempotent (the SDK always sends a request id, and the
  router answers a re-sent id with the request's state), so it is retried on
  ``UNAVAILABLE``/``DEADLINE_EXCEEDED`` (:data:`streamer.rpc.RETRY_IN_PLACE`) with the
  library's backoff policy (:class:`streamer.retry.Backoff`). ``Publish``
  is not: a retry after a lost answer would deliver the message twice.
- **Typed errors**: the client SDK's exceptions (:mod:`streamer.client.errors`), one per
  error code. A refused ``Submit`` raises the class of its ``error`` frame
  (``ValidationError``, ``ForbiddenError``...); gRPC failures map to
  ``ServiceUnavailableError`` (``UNAVAILABLE``), ``RequestTimeoutError`` (deadline),
  ``ForbiddenError`` (``PERMISSION_DENIED``: the caller policy refused the call),
  ``UnauthorizedError`` (``UNAUTHENTICATED``), ``ValidationError``
  (``INVALID_ARGUMENT``), ``PayloadTooLargeError`` (``RESOURCE_EXHAUSTED``), else
  ``InternalError``. Each carries ``details["grpc_status"]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from streamer import callers, protocol, rpc
from streamer.api.v1 import common_pb2, router_pb2, router_pb2_grpc
from streamer.client.errors import (
    ForbiddenError,
    InternalError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceUnavailableError,
    StreamerError,
    UnauthorizedError,
    ValidationError,
    error_from_message,
)
from streamer.config import Settings, load_settings
from streamer.retry import Backoff

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 3

_GRPC_ERRORS: dict[grpc.StatusCode, type[StreamerError]] = {
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeoutError,
    grpc.StatusCode.PERMISSION_DENIED: ForbiddenError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthorizedError,
    grpc.StatusCode.INVALID_ARGUMENT: ValidationError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: PayloadTooLargeError,
}


def grpc_error(exc: grpc.aio.AioRpcError, *, request_id: str | None = None) -> StreamerError:
    """The typed error of a failed router call."""
    code = exc.code()
    cls = _GRPC_ERRORS.get(code, InternalError)
    return cls(
        exc.details() or code.name,
        details={"grpc_status": code.name},
        retryable=code in rpc.RETRY_IN_PLACE,
        request_id=request_id,
    )


@dataclasses.dataclass(frozen=True)
class Delivered:
    """How a publish went: ``delivered + failed == matched``."""

    matched: int
    delivered: int
    failed: int


@dataclasses.dataclass(frozen=True)
class Submitted:
    """A request the router accepted for a user.

    ``frame`` is the router's answer: an ``acknowledgment`` for a new request, or, for an
    id the user already had, its state (``status`` or ``complete``). ``connections`` is
    how many of the user's open connections were attached to it.
    """

    request_id: str
    frame: dict[str, Any]
    connections: int

    @property
    def status(self) -> str:
        """``PENDING`` for a new request, else the stored status the answer reports."""
        kind = self.frame.get("type")
        if kind == "acknowledgment":
            return "PENDING"
        if kind == "complete":
            return "COMPLETED"
        return str(self.frame.get("status", "UNKNOWN"))


def _target(
    to_connection: str | None, to_user: str | None, to_tenant: str | None, tenant: str | None
) -> tuple[router_pb2.PublishTarget, str]:
    given = [t for t in (to_connection, to_user, to_tenant) if t is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of to_connection=, to_user=, to_tenant=")
    if to_connection is not None:
        return router_pb2.PublishTarget(connection_id=to_connection), ""
    if to_user is not None:
        if not tenant:
            raise ValueError("to_user= needs tenant= (a user id is only unique within its tenant)")
        return router_pb2.PublishTarget(user_id=to_user), tenant
    assert to_tenant is not None
    return router_pb2.PublishTarget(tenant_id=to_tenant), ""


class AsyncBackend:
    """Publish and submit from asyncio code::

        async with AsyncBackend() as backend:            # STREAMER_ROUTER_ADDRESS
            sent = await backend.publish({"type": "notice"}, to_user="alice", tenant="acme")
            job = await backend.submit("generate_report", {...}, user="alice", tenant="acme")

    :param target: the router's gRPC address (default ``STREAMER_ROUTER_ADDRESS``).
    :param settings: where TLS, the service token and the message cap come from
        (default: the environment).
    :param timeout: deadline of each call, in seconds.
    :param attempts: tries of an idempotent call (``Submit``) in all.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        settings: Settings | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_base: float = 0.2,
        backoff_max: float = 2.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.settings = settings or load_settings()
        self.target = target or self.settings.router_address
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = Backoff(base=backoff_base, cap=backoff_max, jitter=0.5)
        self._token = callers.signer(self.settings)
        self._channel: grpc.aio.Channel | None = None
        self._stub: router_pb2_grpc.RouterAsyncStub | None = None

    async def __aenter__(self) -> AsyncBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _router(self) -> router_pb2_grpc.RouterAsyncStub:
        if self._stub is None:
            self._channel = rpc.channel(self.target, max_message_bytes=self.settings.grpc_max_message_bytes)
            self._stub = router_pb2_grpc.RouterStub(self._channel)  # type: ignore[assignment]
        assert self._stub is not None
        return self._stub

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return self._token.metadata() if self._token is not None else None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
        self._channel = self._stub = None

    async def _call(
        self, call: Callable[[], Awaitable[T]], *, retry: bool, request_id: str | None = None
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                if not retry or exc.code() not in rpc.RETRY_IN_PLACE or attempt >= self.attempts:
                    raise grpc_error(exc, request_id=request_id) from None
            await asyncio.sleep(self.backoff.delay(attempt))

    async def publish(
        self,
        message: Mapping[str, Any],
        *,
        to_connection: str | None = None,
        to_user: str | None = None,
        to_tenant: str | None = None,
        tenant: str | None = None,
    ) -> Delivered:
        """Send one JSON object to a connection, a user's connections (``tenant=`` too) or a
        tenant's; a message without ``type`` arrives with ``"type": "message"``."""
        target, tenant_id = _target(to_connection, to_user, to_tenant, tenant)
        request = router_pb2.PublishRequest(target=target, tenant_id=tenant_id, message=rpc.dumps(message))
        out = await self._call(
            lambda: self._router().Publish(request, timeout=self.timeout, metadata=self._metadata()),
            retry=False,
        )
        return Delivered(matched=out.matched, delivered=out.delivered, failed=out.failed)

    async def submit(
        self,
        action: str,
        payload: Mapping[str, Any] | None = None,
        *,
        user: str,
        tenant: str,
        permissions: Sequence[str] = (),
        request_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Submitted:
        """Start the async ``action`` for ``user`` of ``tenant``, as if the user had sent it.

        Raises the typed error of a refusal (``InvalidActionError``, ``ForbiddenError``,
        ``ValidationError``, ``DuplicateRequestError``...). A re-submitted id of a request
        that already failed raises that request's error.
        """
        rid = request_id or protocol.new_request_id()
        request = router_pb2.SubmitRequest(
            principal=common_pb2.Principal(user_id=user, tenant_id=tenant, permissions=list(permissions)),
            action=action,
            request_id=rid,
            payload=rpc.dumps(dict(payload or {})),
            metadata=rpc.dumps(dict(metadata)) if metadata is not None else b"",
        )
        out = await self._call(
            lambda: self._router().Submit(request, timeout=self.timeout, metadata=self._metadata()),
            retry=True,
            request_id=rid,
        )
        frame = rpc.loads(out.frame, default={})
        if not isinstance(frame, dict) or frame.get("type") == "error":
            raise error_from_message(frame if isinstance(frame, dict) else {})
        return Submitted(request_id=out.request_id or rid, frame=frame, connections=out.connections)


class Backend:
    """The synchronous twin of :class:`AsyncBackend` (same arguments, same methods)::

    with Backend() as backend:
        backend.publish({"type": "notice"}, to_tenant="acme")
    """

    def __init__(self, target: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="streamer-backend", daemon=True)
        self._thread.start()
        self._async = self._run(self._make(target, kwargs))

    @staticmethod
    async def _make(target: str | None, kwargs: dict[str, Any]) -> AsyncBackend:
        return AsyncBackend(target, **kwargs)  # the channel belongs to the private loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def publish(self, message: Mapping[str, Any], **kwargs: Any) -> Delivered:
        """See :meth:`AsyncBackend.publish`."""
        return self._run(self._async.publish(message, **kwargs))

    def submit(self, action: str, payload: Mapping[str, Any] | None = None, **kwargs: Any) -> Submitted:
        """See :meth:`AsyncBackend.submit`."""
        return self._run(self._async.submit(action, payload, **kwargs))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
