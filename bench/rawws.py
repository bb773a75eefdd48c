"""A minimal WebSocket client for holding thousands of sockets from few client processes.

aiohttp's client spends a few milliseconds of CPU per handshake (request and response
objects, header parsing, a reader task per socket): with 10k sockets on a 2-core
machine the *clients* become what the connection benchmark measures. This protocol
does only what holding a socket needs — send the upgrade request, check for ``101``,
then parse server frames: text frames go to a callback (fan-out), pings are answered
with pongs (Streamer's heartbeat), a close frame closes. It never sends data frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import urllib.parse
from collections.abc import Callable, Mapping
from typing import cast


class HandshakeError(ConnectionError):
    """The server answered the upgrade with something other than 101."""


class RawWebSocket(asyncio.Protocol):
    def __init__(self, request: bytes, on_text: Callable[[str], None] | None) -> None:
        self.request = request
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed during the handshake"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            status = head.split("\r\n", 1)[0]
            if " 101 " not in status + " ":
                self.upgraded.set_exception(HandshakeError(status))
                if self.transport is not None:
                    self.transport.close()
                return
            self.upgraded.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = struct.unpack_from("!H", buf, 2)[0]
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                offset = 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode == 0x1 and self.on_text is not None:
                self.on_text(payload.decode("utf-8", errors="replace"))
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                self._send(0x8, payload[:2])
                if self.transport is not None:
                    self.transport.close()
                return

    def _send(self, opcode: int, payload: bytes) -> None:
        """A masked client frame (payloads here are control frames, < 126 bytes)."""
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(0x8, struct.pack("!H", 1000))
            self.transport.close()


async def connect(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    on_text: Callable[[str], None] | None = None,
    timeout: float = 30.0,
) -> RawWebSocket:
    """Open ``ws://host:port/path`` and wait for the 101; raises on anything else."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    loop = asyncio.get_running_loop()
    transport, proto = await asyncio.wait_for(
        loop.create_connection(lambda: RawWebSocket(request, on_text), host, port), timeout
    )
    try:
        await asyncio.wait_for(proto.upgraded, timeout)
    except BaseException:
        transport.close()
        raise
    return proto
