"""Addresses to replicas: what a client-side balancer needs to know about a name.

A balancer that picks a replica per call itself (the router's direct-dispatch offers
choose a processor by reported load) cannot leave resolution to gRPC: it needs the
addresses behind a name, re-resolved as pods come and go. This module turns one
configured address into the ``host:port`` targets behind it:

- ``10.0.0.7:50051`` or ``[fd00::7]:50051`` — one replica;
- ``processor.streamer.svc:50051`` — every address the system resolver returns (in the
  cluster: a headless Service, one A record per ready pod);
- ``dns://127.0.0.1:5353/processor.streamer.local:50051`` — gRPC's own target form with
  the DNS server in the authority: the name is asked of that server only (the local
  stack's DNS stub, :mod:`streamer.local.dns`, plays the headless Services this way
  without touching the machine's resolver).

Built on dnslib for the DNS wire format (packing a query and parsing an answer is its
job, not ours); the query itself is one UDP datagram on the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

__all__ = ["Address", "parse", "resolve"]

DNS_SCHEME = "dns://"


@dataclass(frozen=True)
class Address:
    """One configured address: ``host:port``, maybe asked of a given DNS server."""

    host: str
    port: int
    #: ``(host, port)`` of the DNS server named in a ``dns://`` authority, else None.
    dns_server: tuple[str, int] | None = None

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def _split(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if (not sep or "]" in port) and default_port is not None:
        host, port = text, str(default_port)
    elif not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"expected host:port, got {text!r}")
    return host, int(port)


def parse(address: str) -> Address:
    """``host:port``, ``[v6]:port`` or ``dns://server[:port]/host:port``; ValueError otherwise."""
    if address.startswith(DNS_SCHEME):
        authority, slash, rest = address[len(DNS_SCHEME) :].partition("/")
        if not slash or not authority:
            raise ValueError(f"expected dns://server[:port]/host:port, got {address!r}")
        server = _split(authority, default_port=53)
        host, port = _split(rest)
        return Address(host=host, port=port, dns_server=server)
    host, port = _split(address)
    return Address(host=host, port=port)


def target(host: str, port: int) -> str:
    """A gRPC target for one address (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self, answer: asyncio.Future[bytes]) -> None:
        self.answer = answer

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _ask(server: tuple[str, int], name: str, *, timeout: float) -> list[str]:
    """The A records of ``name`` from ``server`` (OSError when it does not answer)."""
    from dnslib import QTYPE, RCODE, DNSRecord

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _OneAnswer(answer), remote_addr=server)
    try:
        query = DNSRecord.question(name, "A")
        transport.sendto(query.pack())
        try:
            data = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise OSError(f"DNS server {server[0]}:{server[1]} did not answer for {name}") from None
    finally:
        transport.close()
    reply = DNSRecord.parse(data)
    if reply.header.id != query.header.id:
        raise OSError(f"DNS answer for another query from {server[0]}:{server[1]}")
    if reply.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
        raise OSError(f"DNS server {server[0]}:{server[1]} answered {RCODE.get(reply.header.rcode)}")
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


async def resolve(address: Address | str, *, timeout: float = 2.0) -> list[str]:
    """The gRPC targets (``host:port``) behind ``address`` right now, sorted.

    An empty list is an answer (no replica is ready); OSError means the name could not
    be resolved at all, and a caller should keep what it had.
    """
    addr = parse(address) if isinstance(address, str) else address
    if addr.is_ip:
        return [target(addr.host, addr.port)]
    if addr.dns_server is not None:
        hosts = await _ask(addr.dns_server, addr.host, timeout=timeout)
    else:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM), timeout
        )
        hosts = [str(info[4][0]) for info in infos]
    return sorted({target(host, addr.port) for host in hosts})
