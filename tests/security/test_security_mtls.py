"""Mutual TLS between the services, as the chart configures it (``tls.enabled``).

The chart mounts a Secret's ``tls.crt``/``tls.key``/``ca.crt`` and sets
``STREAMER_TLS_CERT_FILE``, ``STREAMER_TLS_KEY_FILE`` and ``STREAMER_TLS_CA_FILE``. With
those set, a gRPC server must refuse a plaintext client (``tests/integration/test_mtls.py``
covers clients with certificates of the right and of another CA). Handler pods are user
code, so they take part only with ``STREAMER_TLS_HANDLERS=true``, as here.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys

from pki import tls_env, write_pki

from streamer.local.ports import free_port
from streamer.local.stack import grpc_serving


async def test_grpc_server_with_tls_settings_refuses_plaintext(tmp_path: pathlib.Path) -> None:
    files = write_pki(tmp_path, "handler")["handler"]
    port = free_port()
    env = {
        **os.environ,
        **tls_env(files),
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
