"""A tiny DNS server on loopback: the local stack's stand-in for headless Services.

In the cluster a gRPC client reaches a Deployment through a headless Service name that
resolves to every ready pod's IP. The local stack does the same for services that run
several replicas: each replica is a process bound to its own loopback address (127.0.1.1,
127.0.1.2, ... — Linux routes all of 127.0.0.0/8 to the loopback interface) on one shared
port, as pods share a port on different IPs, and this server answers the name with the
addresses of the replicas that are up. gRPC's c-ares resolver accepts a DNS server in the
target's authority (``dns://127.0.0.1:PORT/handler.streamer.local:50061``), so nothing on
the machine is changed. Built on dnslib (encoding DNS answers is its job, not ours).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

__all__ = ["DnsStub"]


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, names: Iterable[str]) -> None:
        self.records: dict[str, list[str]] = {name.rstrip("."): [] for name in names}
        self.lock = threading.Lock()
        self.queries = 0

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        question = request.q
        name = str(question.qname).rstrip(".")
        if question.qtype in (QTYPE.A, QTYPE.ANY):
            with self.lock:
                addresses = list(self.records.get(name, ()))
                self.queries += 1
            for address in addresses:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


class DnsStub:
    """``start()``; ``set(name, addresses)`` whenever a replica set changes; ``stop()``."""

    def __init__(self, names: Iterable[str]) -> None:
        self.resolver = _Resolver(names)
        self.server = DNSServer(
            self.resolver, port=0, address="127.0.0.1", tcp=False, logger=DNSLogger(log="-request,-reply")
        )
        self.port = 0
        self._started = False

    def start(self) -> DnsStub:
        self.server.start_thread()
        self._started = True
        self.port = int(self.server.server.server_address[1])
        return self

    def set(self, name: str, addresses: Iterable[str]) -> None:
        with self.resolver.lock:
            self.resolver.records[name.rstrip(".")] = list(addresses)

    def addresses(self, name: str) -> list[str]:
        with self.resolver.lock:
            return list(self.resolver.records.get(name.rstrip("."), ()))

    def target(self, name: str, port: int) -> str:
        """The gRPC target for ``name:port``, resolved by this server."""
        return f"dns://127.0.0.1:{self.port}/{name}:{port}"

    @property
    def queries(self) -> int:
        return self.resolver.queries

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.server.stop()
