"""Optional mutual TLS between the services' gRPC servers and channels."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pki import write_pki

from streamer import rpc
from streamer.config import ConfigError, load_settings


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    folders = tmp_path / "good", tmp_path / "other"
    for folder in folders:
        folder.mkdir()
    good, other = (write_pki(f, "streamer.internal", ca_name=f"{f.name}-ca") for f in folders)
    yield good["streamer.internal"], other["streamer.internal"]
    rpc.reset_tls()


async def _check(channel: aio.Channel) -> bool:
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        out = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        return bool(out.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False
    finally:
        await channel.close()


async def test_mtls_server_accepts_only_clients_of_its_ca(pki: tuple[dict[str, str], dict[str, str]]) -> None:
    good, other = pki
    rpc.configure_tls(load_settings({}, **good))
    server = rpc.create_server()
    health = rpc.finish_server(server, service_names=[])
    port = rpc.bind(server, host="127.0.0.1", port=0)
    await server.start()
    await rpc.set_serving(health, service_names=[], serving=True)
    try:
        assert await _check(rpc.channel(f"127.0.0.1:{port}"))
        # plaintext is refused
        assert not await _check(aio.insecure_channel(f"127.0.0.1:{port}"))
        # a client certificate from another CA is refused
        rpc.configure_tls(load_settings({}, **other))
        assert not await _check(rpc.channel(f"127.0.0.1:{port}"))
        # handler peers stay plaintext unless STREAMER_TLS_HANDLERS is on
        rpc.configure_tls(load_settings({}, **good))
        assert not await _check(rpc.channel(f"127.0.0.1:{port}", peer="handler"))
        rpc.configure_tls(load_settings({}, tls_handlers=True, tls_server_name="streamer.internal", **good))
        assert await _check(rpc.channel(f"127.0.0.1:{port}", peer="handler"))
    finally:
        await server.stop(None)


def test_half_configured_tls_is_a_configuration_error(pki: tuple[dict[str, str], dict[str, str]]) -> None:
    good, _ = pki
    with pytest.raises(ConfigError) as err:
        rpc.configure_tls(load_settings({}, tls_cert_file=good["tls_cert_file"]))
    assert err.value.variable == "STREAMER_TLS_KEY_FILE"
    with pytest.raises(ConfigError) as err:
        rpc.configure_tls(load_settings({}, **{**good, "tls_ca_file": "/nonexistent/ca.pem"}))
    assert err.value.variable == "STREAMER_TLS_CA_FILE"
    assert rpc.configure_tls(load_settings({})) is None
