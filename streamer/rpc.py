"""gRPC plumbing every Streamer server and client shares.

Servers get health checking, reflection and capped message sizes in one call;
channels get the same caps and keepalive settings. Payloads cross gRPC as JSON
bytes: :func:`dumps` / :func:`loads` are the one place that encodes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterable
from typing import Any, Generic, Literal, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from streamer.api.v1 import common_pb2
from streamer.config import ConfigError, Settings
from streamer.protocol import json_depth
from streamer.tasks import TaskSet

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

#: The one classification of failed gRPC calls. A call that failed with one of
#: ``RETRY_IN_PLACE`` may succeed if sent again at once on the same channel (the peer
#: was not reached or did not answer in time): delivery to connect pods retries these.
RETRY_IN_PLACE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: A handler call that ended with one of these is worth another attempt: the handler
#: was unreachable, overloaded, late, or died mid-call. Anything else (UNIMPLEMENTED,
#: INVALID_ARGUMENT, ...) would fail the same way again.
RETRYABLE = RETRY_IN_PLACE | {
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}

#: Who is on the other end: Streamer's own services, or a handler pod (user code).
Peer = Literal["service", "handler"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """Mutual TLS material for gRPC: every server asks for a client certificate."""

    cert: bytes
    key: bytes
    ca: bytes
    server_name: str | None = None
    handlers: bool = False

    def applies_to(self, peer: Peer) -> bool:
        return peer == "service" or self.handlers


_tls: TlsConfig | None = None


def configure_tls(settings: Settings) -> TlsConfig | None:
    """Turn mTLS on for this process's servers and channels when the settings name the files.

    Called once by each service at start. Certificate, key and CA come together or not
    at all (a half-configured TLS is a configuration error, not a silent plaintext
    fallback). Handler pods are user code, so channels to them stay plaintext unless
    ``STREAMER_TLS_HANDLERS`` says the handlers are configured too.
    """
    global _tls
    files = {
        "STREAMER_TLS_CERT_FILE": settings.tls_cert_file,
        "STREAMER_TLS_KEY_FILE": settings.tls_key_file,
        "STREAMER_TLS_CA_FILE": settings.tls_ca_file,
    }
    given = {var: path for var, path in files.items() if path}
    if not given:
        _tls = None
        return None
    missing = [var for var in files if var not in given]
    if missing:
        raise ConfigError(missing[0], "required when any STREAMER_TLS_*_FILE is set (mTLS needs all three)")
    data = {}
    for var, path in given.items():
        try:
            data[var] = pathlib.Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(var, f"cannot read {path}: {exc.strerror}") from None
    _tls = TlsConfig(
        cert=data["STREAMER_TLS_CERT_FILE"],
        key=data["STREAMER_TLS_KEY_FILE"],
        ca=data["STREAMER_TLS_CA_FILE"],
        server_name=settings.tls_server_name,
        handlers=settings.tls_handlers,
    )
    return _tls


def reset_tls() -> None:
    """Back to plaintext (tests)."""
    global _tls
    _tls = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionAge:
    """How long a client may keep one connection to a server before it is asked to move.

    gRPC clients keep a channel's connections for as long as they work, so a pod that
    a Deployment or an HPA adds gets no calls until something breaks an existing
    connection. Servers therefore send GOAWAY after ``max_seconds`` (gRPC adds ±10 %
    jitter); the client re-resolves its target (every address of a headless Service)
    and round-robins new calls over what it finds. Calls already running are not cut:
    with ``grace_seconds`` 0 the old connection lives until its last stream ends,
    which a processor's Invoke of a long action needs.
    """

    max_seconds: float = 30.0
    grace_seconds: float = 0.0

    def options(self) -> list[tuple[str, Any]]:
        if self.max_seconds <= 0:
            return []
        out: list[tuple[str, Any]] = [("grpc.max_connection_age_ms", int(self.max_seconds * 1000))]
        if self.grace_seconds > 0:
            out.append(("grpc.max_connection_age_grace_ms", int(self.grace_seconds * 1000)))
        return out


_age = ConnectionAge()

#: Least time between two DNS re-resolutions of one channel (gRPC's default is 30 s): a
#: GOAWAY from an aged-out connection then finds new pods within seconds.
DNS_MIN_RESOLUTION_MS = 5_000


def configure(settings: Settings) -> TlsConfig | None:
    """Apply the settings every gRPC server and channel of this process shares.

    mTLS (see :func:`configure_tls`) and the servers' connection age. Called once by
    each service at start.
    """
    global _age
    _age = ConnectionAge(
        max_seconds=settings.grpc_max_connection_age_seconds,
        grace_seconds=settings.grpc_max_connection_age_grace_seconds,
    )
    return configure_tls(settings)


def channel_options(*, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Transparent retries only (no retry policy is configured): an RPC that never left
        # this process — e.g. one that raced a server's GOAWAY when its connection aged out
        # (ConnectionAge) — is sent again on a fresh connection instead of failing with
        # UNAVAILABLE. RPCs the server may have seen are never retried by gRPC.
        ("grpc.enable_retries", 1),
        ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_RESOLUTION_MS),
    ]


def server_options(*, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", 0),
        *_age.options(),
    ]


def create_server(
    *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, interceptors: Iterable[aio.ServerInterceptor] = ()
) -> aio.Server:
    """A grpc.aio server with our options (add services, then :func:`finish_server`)."""
    return aio.server(
        options=server_options(max_message_bytes=max_message_bytes), interceptors=list(interceptors)
    )


def finish_server(server: aio.Server, *, service_names: Iterable[str]) -> HealthServicer:
    """Add health checking (every service SERVING) and reflection; return the health servicer."""
    names = list(service_names)
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return servicer


async def set_serving(servicer: HealthServicer, *, service_names: Iterable[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await servicer.set(name, status)


def bind(server: aio.Server, *, host: str, port: int, peer: Peer = "service") -> int:
    """Listen on host:port (0 picks a free port); return the bound port.

    With mTLS configured (see :func:`configure_tls`) the port requires a client
    certificate signed by the configured CA.
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if _tls is not None and _tls.applies_to(peer):
        creds = grpc.ssl_server_credentials(
            [(_tls.key, _tls.cert)], root_certificates=_tls.ca, require_client_auth=True
        )
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {address}")
    return bound


def channel(
    target: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, peer: Peer = "service"
) -> aio.Channel:
    """A grpc.aio channel with our options; mutual TLS when configured for this peer.

    ``round_robin`` spreads calls over every address a (headless) Service name
    resolves to, instead of pinning one pod; the servers' connection age
    (:class:`ConnectionAge`) makes the channel re-resolve, so pods added later get
    their share too.
    """
    options = [*channel_options(max_message_bytes=max_message_bytes), ("grpc.lb_policy_name", "round_robin")]
    if _tls is not None and _tls.applies_to(peer):
        if _tls.server_name:
            options.append(("grpc.ssl_target_name_override", _tls.server_name))
        creds = grpc.ssl_channel_credentials(
            root_certificates=_tls.ca, private_key=_tls.key, certificate_chain=_tls.cert
        )
        return aio.secure_channel(target, creds, options=options)
    return aio.insecure_channel(target, options=options)


StubT = TypeVar("StubT")


class ChannelPool(Generic[StubT]):
    """One long-lived channel (and stub) per endpoint, opened on first use.

    Every caller of a fleet of pods shares one: the router and the processor for
    handler pods, delivery for connect pods. :meth:`evict` forgets a pod that is gone
    so channels do not pile up as pods come and go.
    """

    def __init__(
        self,
        make_stub: Callable[[aio.Channel], StubT],
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        peer: Peer = "service",
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self._make_stub = make_stub
        self._peer: Peer = peer
        self._open: dict[str, tuple[aio.Channel, StubT]] = {}
        self._closing = TaskSet()
        self._closed = False

    def stub(self, endpoint: str) -> StubT:
        found = self._open.get(endpoint)
        if found is None:
            if self._closed:
                raise RuntimeError("the channel pool is closed")
            ch = channel(endpoint, max_message_bytes=self.max_message_bytes, peer=self._peer)
            found = self._open[endpoint] = (ch, self._make_stub(ch))
        return found[1]

    def connected(self, endpoint: str) -> bool:
        """Whether the channel to ``endpoint`` is open and READY (without trying to connect)."""
        found = self._open.get(endpoint)
        return (
            found is not None and found[0].get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY
        )

    def evict(self, endpoint: str, *, grace: float = 1.0) -> None:
        """Forget the channel to ``endpoint``, closing it in the background."""
        found = self._open.pop(endpoint, None)
        if found is not None:
            self._closing.spawn(found[0].close(grace))

    async def close(self) -> None:
        """Close every channel; the pool is unusable afterwards."""
        self._closed = True
        found, self._open = list(self._open.values()), {}
        await asyncio.gather(*(ch.close(None) for ch, _ in found), return_exceptions=True)
        await self._closing.wait()


def dumps(value: Any) -> bytes:
    """A JSON value as the bytes a contract field carries."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes, *, default: Any = None, max_depth: int | None = None) -> Any:
    """The JSON value in a contract field (``default`` when empty).

    Raises ``ValueError`` for anything that is not JSON — including nesting deep enough
    to exhaust the parser's recursion, which ``json`` reports as ``RecursionError`` and a
    servicer would otherwise answer as gRPC ``UNKNOWN`` — and, with ``max_depth``, for
    JSON nested deeper than that (inbound payloads: schema validation recurses too).
    """
    if not data:
        return default
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if max_depth is not None and json_depth(value, max_depth) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


def error_pb(code: str, message: str, *, details: Any = None, retryable: bool = False) -> common_pb2.Error:
    return common_pb2.Error(
        code=code,
        message=message,
        details=dumps(details) if details is not None else b"",
        retryable=retryable,
    )
