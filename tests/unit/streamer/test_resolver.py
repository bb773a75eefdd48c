"""streamer.resolver: configured addresses to the replicas behind them (against a real DNS stub)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from streamer import resolver
from streamer.local.dns import DnsStub


@pytest.fixture
def dns() -> Iterator[DnsStub]:
    stub = DnsStub(["processor.streamer.local"]).start()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.7:50051", resolver.Address("10.0.0.7", 50051)),
        ("[fd00::7]:50051", resolver.Address("fd00::7", 50051)),
        ("processor.svc:1", resolver.Address("processor.svc", 1)),
        ("dns://127.0.0.1:5353/p.local:50051", resolver.Address("p.local", 50051, ("127.0.0.1", 5353))),
        ("dns://10.0.0.10/p.local:50051", resolver.Address("p.local", 50051, ("10.0.0.10", 53))),
        ("dns://[::1]/p.local:7", resolver.Address("p.local", 7, ("::1", 53))),
    ],
)
def test_parse_accepts_the_documented_forms(text: str, expected: resolver.Address) -> None:
    assert resolver.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "host", "host:", ":50051", "host:port", "dns://", "dns://1.2.3.4", "dns:///p:1", "dns://1.2.3.4/p"],
)
def test_parse_refuses_what_is_not_an_address(text: str) -> None:
    with pytest.raises(ValueError):
        resolver.parse(text)


async def test_an_ip_is_one_replica_without_asking_anyone() -> None:
    assert await resolver.resolve("10.0.0.7:50051") == ["10.0.0.7:50051"]
    assert await resolver.resolve("[fd00::7]:1") == ["[fd00::7]:1"]


async def test_a_name_is_asked_of_the_server_in_the_authority(dns: DnsStub) -> None:
    address = dns.target("processor.streamer.local", 50051)
    assert await resolver.resolve(address) == []  # no replica ready: an answer, not an error
    dns.set("processor.streamer.local", ["127.0.3.2", "127.0.3.1"])
    assert await resolver.resolve(address) == ["127.0.3.1:50051", "127.0.3.2:50051"]
    dns.set("processor.streamer.local", ["127.0.3.2"])
    assert await resolver.resolve(address) == ["127.0.3.2:50051"]


async def test_a_system_name_goes_through_getaddrinfo() -> None:
    assert "127.0.0.1:9" in await resolver.resolve("localhost:9")


async def test_a_dns_server_that_does_not_answer_is_an_oserror() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never reads: the query times out
        port = silent.getsockname()[1]
        with pytest.raises(OSError):
            await resolver.resolve(f"dns://127.0.0.1:{port}/p.local:1", timeout=0.2)
