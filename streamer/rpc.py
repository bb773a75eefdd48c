"""gRPC plumbing every Streamer server and client shares.

Servers get health checking, reflection and capped message sizes in one call;
channels get the same caps and keepalive settings. Payloads cross gRPC as JSON
bytes: :func:`dumps` / :func:`loads` are the one place that encodes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from streamer.api.v1 import common_pb2

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def channel_options(*, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),
    ]


def server_options(*, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", 0),
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


async def set_serving(
    servicer: HealthServicer, *, service_names: Iterable[str], serving: bool
) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await servicer.set(name, status)


def bind(server: aio.Server, *, host: str, port: int) -> int:
    """Listen on host:port (0 picks a free port); return the bound port."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {address}")
    return bound


def channel(target: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> aio.Channel:
    """An insecure grpc.aio channel with our options (mTLS is terminated by the mesh/chart)."""
    return aio.insecure_channel(target, options=channel_options(max_message_bytes=max_message_bytes))


def dumps(value: Any) -> bytes:
    """A JSON value as the bytes a contract field carries."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes, *, default: Any = None) -> Any:
    """The JSON value in a contract field (``default`` when empty)."""
    if not data:
        return default
    return json.loads(data)


def error_pb(code: str, message: str, *, details: Any = None, retryable: bool = False) -> common_pb2.Error:
    return common_pb2.Error(
        code=code,
        message=message,
        details=dumps(details) if details is not None else b"",
        retryable=retryable,
    )


TRANSIENT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
