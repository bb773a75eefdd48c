"""Mutual TLS between the services, as the chart configures it (``tls.enabled``).

The chart mounts a Secret's ``tls.crt``/``tls.key``/``ca.crt`` and sets
``STREAMER_TLS_CERT_FILE``, ``STREAMER_TLS_KEY_FILE`` and ``STREAMER_TLS_CA_FILE``. With
those set, a gRPC server must refuse a plaintext client (``tests/integration/test_mtls.py``
covers clients with certificates of the right and of another CA). Handler pods are user
code, so they take part only with ``STREAMER_TLS_HANDLERS=true``, as here.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import pathlib
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streamer.local.ports import free_port
from streamer.local.stack import grpc_serving


def _cert(
    subject: str, *, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: x509.Name | None, ca: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(tz=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def test_grpc_server_with_tls_settings_refuses_plaintext(tmp_path: pathlib.Path) -> None:
    ca_key, ca = _cert("streamer-test-ca", issuer_key=None, issuer=None, ca=True)
    key, cert = _cert("handler", issuer_key=ca_key, issuer=ca.subject, ca=False)
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(_pem(key))
    port = free_port()
    env = {
        **os.environ,
        "STREAMER_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
        "STREAMER_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        "STREAMER_TLS_CA_FILE": str(tmp_path / "ca.crt"),
        "STREAMER_TLS_HANDLERS": "true",
    }
    cmd = [sys.executable, "-m", "streamer.cli.main", "handler", "examples", "--host", "127.0.0.1"]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "--port",
        str(port),
        "--http-port",
        "-1",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        listening = False
        for _ in range(300):  # up to 30 s to bind
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                listening = True
                break
            except OSError:
                await asyncio.sleep(0.1)
        assert listening, "the handler never listened"
        # A plaintext client must not get an answer from a server configured for mTLS.
        assert not await grpc_serving(f"127.0.0.1:{port}", timeout=3.0)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
