"""A tiny DNS server on loopback: one name, A records the test changes while it runs.

Kubernetes gives gRPC clients a headless Service name that resolves to every ready pod's
IP; this plays that part. gRPC's c-ares resolver takes a DNS server in the target's
authority (``dns://127.0.0.1:PORT/handlers.test:50061``), so no system file changes. Pods
are processes bound to different loopback addresses (127.0.0.2, .3, ...) on one port, as
pods share a port on different IPs. Built on dnslib (encoding DNS answers is its job).
"""

from __future__ import annotations

import threading
from typing import Any

from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        self.name = name.rstrip(".")
        self.addresses: list[str] = []
        self.lock = threading.Lock()
        self.queries = 0

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        question = request.q
        if str(question.qname).rstrip(".") == self.name and question.qtype in (QTYPE.A, QTYPE.ANY):
            with self.lock:
                self.queries += 1
                for address in self.addresses:
                    reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


class DnsStub:
    """``start()``, then ``set(addresses)`` whenever the 'pod set' changes; ``stop()``."""

    def __init__(self, name: str) -> None:
        self.resolver = _Resolver(name)
        self.server = DNSServer(
            self.resolver, port=0, address="127.0.0.1", tcp=False, logger=DNSLogger(log="-request,-reply")
        )
        self.port = 0

    def start(self) -> DnsStub:
        self.server.start_thread()
        self.port = int(self.server.server.server_address[1])
        return self

    def set(self, addresses: list[str]) -> None:
        with self.resolver.lock:
            self.resolver.addresses = list(addresses)

    def target(self, port: int) -> str:
        """The gRPC target for ``name:port`` resolved by this server."""
        return f"dns://127.0.0.1:{self.port}/{self.resolver.name}:{port}"

    @property
    def queries(self) -> int:
        return self.resolver.queries

    def stop(self) -> None:
        self.server.stop()
