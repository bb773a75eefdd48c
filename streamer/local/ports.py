"""Free loopback ports, so two stacks or two test runs never collide."""

from __future__ import annotations

import random
import socket

#: Ports handed out are taken below the kernel's ephemeral range: a port from inside it
#: (what ``bind(0)`` returns) can be taken as the *local* port of any outgoing connection
#: (to DynamoDB Local, between services) in the moment between this check and the
#: service's own bind — "Address already in use" at start, seen in full suite runs.
_LOW, _HIGH = 20000, 32767


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, outside the ephemeral range when possible."""
    high = min(_HIGH, _ephemeral_floor() - 1)
    for _ in range(50):
        port = random.randint(_LOW, high) if high > _LOW else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
