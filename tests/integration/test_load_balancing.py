"""A replica started later gets its share of calls: round robin plus connection age.

Three real handler processes (``streamer handler examples``) play three pods of one
handler Deployment: each bound to its own loopback address on the same port, behind one
name that a DNS stub resolves, as a headless Service does. The caller is the library's own
channel (``streamer.rpc.channel``, what router, processor and delivery use). Two replicas
serve first; then a third starts and joins the name. The servers age their connections out
(``STREAMER_GRPC_MAX_CONNECTION_AGE_SECONDS``, 1 s here, 30 s by default), the channel
re-resolves on the GOAWAY, and round robin sends the newcomer its share.

Without connection age the channel would never look again — the test shows that too, so it
cannot pass by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import grpc
import pytest
from grpc import aio
from metricslib import scrape

from streamer import rpc
from streamer.api.v1 import handler_pb2, handler_pb2_grpc
from streamer.config import load_settings
from streamer.local.dns import DnsStub
from streamer.local.ports import free_port

ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
NAME = "handlers.streamer.test"


class Replica:
    def __init__(self, address: str, *, port: int, age: float) -> None:
        self.address = address
        self.http_port = free_port(address)
        env = {
            **os.environ,
            "STREAMER_GRPC_MAX_CONNECTION_AGE_SECONDS": str(age),
            "STREAMER_LOG_LEVEL": "WARNING",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamer.cli.main",
                "handler",
                "examples",
                "--host",
                address,
                "--port",
                str(port),
                "--http-port",
                str(self.http_port),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self, session: aiohttp.ClientSession, *, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"handler on {self.address} exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://{self.address}:{self.http_port}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"handler on {self.address} not ready")

    async def echo_calls(self, session: aiohttp.ClientSession) -> int:
        metrics = await scrape(self.http_port, host=self.address, session=session)
        return int(metrics.total("streamer_handler_invocations_total", action="echo"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def dns() -> Iterator[DnsStub]:
    stub = DnsStub([NAME]).start()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _port_free_everywhere() -> int:
    for _ in range(50):
        port = free_port(ADDRESSES[0])
        try:
            for address in ADDRESSES[1:]:
                with socket.socket() as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every test address")


async def _calls(stub: handler_pb2_grpc.HandlerStub, n: int) -> None:
    for i in range(n):
        request = handler_pb2.InvokeRequest(request_id=f"lb-{i}", action="echo", payload=b'{"message":"hi"}')
        async for _ in stub.Invoke(request, timeout=10):  # type: ignore[attr-defined]
            pass


async def _share_of_newcomer(
    *, age: float, dns: DnsStub, session: aiohttp.ClientSession, window: float
) -> tuple[float, float | None]:
    """Two replicas, calls, then a third: (its share of the last round, seconds to its first call)."""
    port = _port_free_everywhere()
    replicas = [Replica(a, port=port, age=age) for a in ADDRESSES[:2]]
    try:
        for replica in replicas:
            await replica.ready(session)
        dns.set(NAME, ADDRESSES[:2])
        channel = rpc.channel(dns.target(NAME, port), peer="handler")
        stub = handler_pb2_grpc.HandlerStub(channel)
        before = [0, 0]
        deadline = time.monotonic() + 20
        while not all(before) and time.monotonic() < deadline:  # until both subchannels are READY
            await _calls(stub, 10)
            before = [await r.echo_calls(session) for r in replicas]
        assert all(before), f"round robin over the first two replicas: {before}"

        newcomer = Replica(ADDRESSES[2], port=port, age=age)
        replicas.append(newcomer)
        await newcomer.ready(session)
        dns.set(NAME, ADDRESSES)
        joined = time.monotonic()
        first_call: float | None = None
        share = 0.0
        while time.monotonic() - joined < window:
            counts = [await r.echo_calls(session) for r in replicas]
            await _calls(stub, 30)
            after = [await r.echo_calls(session) for r in replicas]
            delta = [b - a for a, b in zip(counts, after, strict=True)]
            share = delta[2] / max(1, sum(delta))
            if delta[2] and first_call is None:
                first_call = time.monotonic() - joined
            if share >= 0.2:
                break
            await asyncio.sleep(0.2)
        await channel.close(None)
        return share, first_call
    finally:
        for replica in replicas:
            replica.stop()


async def test_a_new_replica_gets_its_share_within_seconds(
    dns: DnsStub, session: aiohttp.ClientSession
) -> None:
    share, first_call = await _share_of_newcomer(age=1.0, dns=dns, session=session, window=45)
    assert first_call is not None, "the new replica got no call"
    print(f"\nnewcomer: first call {first_call:.1f} s after joining the name; last round share {share:.0%}")
    assert share >= 0.2  # a third of the calls is its fair share; round robin gives about that


async def test_without_connection_age_a_new_replica_gets_nothing(
    dns: DnsStub, session: aiohttp.ClientSession
) -> None:
    """The control: with age 0 (off) the channel never re-resolves while its connections work."""
    share, first_call = await _share_of_newcomer(age=0, dns=dns, session=session, window=6)
    assert first_call is None and share == 0


async def test_calls_racing_an_aged_out_connection_are_not_lost() -> None:
    """A GOAWAY from connection age never fails a call that had not reached the server.

    Servers age connections out every 50 ms here while ten callers hammer them through the
    library's channel; calls that race a GOAWAY are retried transparently (the channel's
    ``grpc.enable_retries``). With transparent retries off, a few of these 3,000 calls fail
    with UNAVAILABLE.
    """
    rpc.configure(load_settings({"STREAMER_GRPC_MAX_CONNECTION_AGE_SECONDS": "0.05"}))
    try:
        server = rpc.create_server()
    finally:
        rpc.configure(load_settings({}))

    async def who(request: bytes, context: object) -> bytes:
        return b"ok"

    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("t.T", {"Who": grpc.unary_unary_rpc_method_handler(who)})]
    )
    port = rpc.bind(server, host="127.0.0.1", port=0)
    await server.start()
    channel = rpc.channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/t.T/Who", None, None)  # bytes in, bytes out
    failures: list[str] = []

    async def caller() -> None:
        for _ in range(300):
            try:
                await call(b"", timeout=10)
            except aio.AioRpcError as exc:
                failures.append(str(exc.code()))

    try:
        await asyncio.gather(*(caller() for _ in range(10)))
    finally:
        await channel.close(None)
        await server.stop(None)
    assert failures == []
