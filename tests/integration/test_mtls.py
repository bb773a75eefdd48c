"""Optional mutual TLS between the services' gRPC servers and channels."""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
from collections.abc import Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamer import rpc
from streamer.config import ConfigError, load_settings


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(
            issuer.subject if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        )
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("streamer.internal"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pki(folder: pathlib.Path, name: str) -> dict[str, str]:
    ca_key = _key()
    ca = _cert(f"{name}-ca", ca_key, None, ca_key)
    leaf_key = _key()
    leaf = _cert("streamer", leaf_key, ca, ca_key)
    paths = {
        "tls_ca_file": folder / f"{name}-ca.pem",
        "tls_cert_file": folder / f"{name}-cert.pem",
        "tls_key_file": folder / f"{name}-key.pem",
    }
    paths["tls_ca_file"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["tls_cert_file"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths["tls_key_file"].write_bytes(_pem_key(leaf_key))
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    yield _write_pki(tmp_path, "good"), _write_pki(tmp_path, "other")
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
