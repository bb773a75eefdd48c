"""Routing one message: the router's frames in order, and an answer on every failure."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from services.connect.router_client import RouterClient, RouterUnavailable
from services.connect.routing import Routing
from services.connect.session import ClientConnection
from streamer import protocol


class FakeRouter:
    def __init__(self, answer: list[bytes] | Exception) -> None:
        self.answer = answer
        self.calls: list[str] = []

    async def route(self, *, connection_id: str, identity: Any, message: Any, request_id: str) -> list[bytes]:
        self.calls.append(request_id)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class FakeSocket:
    connection_id = "c-1"
    identity = None

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.routing: list[tuple[str, str]] = []
        self.inflight: set[asyncio.Task[None]] = set()

    def routing_started(self, request_id: str) -> None:
        self.routing.append(("started", request_id))

    def routing_done(self, request_id: str) -> None:
        self.routing.append(("done", request_id))

    def send_text(self, text: str) -> bool:
        self.texts.append(text)
        return True

    def send_message(self, message: dict[str, Any]) -> bool:
        return self.send_text(protocol.encode(message))


MESSAGE = protocol.ClientMessage(action="echo", request_id="r-1", payload={}, metadata={})


async def route(answer: list[bytes] | Exception) -> tuple[FakeSocket, FakeRouter]:
    router, sock = FakeRouter(answer), FakeSocket()
    routing = Routing(cast(RouterClient, router))
    routing.dispatch(cast(ClientConnection, sock), MESSAGE, "r-1")
    assert len(sock.inflight) == 1  # a task of the connection, cancelled when it closes
    await asyncio.gather(*sock.inflight)
    assert sock.routing == [("started", "r-1"), ("done", "r-1")]  # held frames are released
    return sock, router


async def test_the_router_frames_are_sent_in_order() -> None:
    sock, router = await route([b'{"type":"acknowledgment","n":1}', b'{"type":"complete","n":2}'])
    assert router.calls == ["r-1"]
    assert [json.loads(t)["n"] for t in sock.texts] == [1, 2]
    assert not sock.inflight


async def test_an_unreachable_router_is_a_retryable_service_unavailable() -> None:
    sock, _ = await route(RouterUnavailable("UNAVAILABLE", "down"))
    [error] = [json.loads(t) for t in sock.texts]
    assert error["error"]["code"] == protocol.SERVICE_UNAVAILABLE and error["error"]["retryable"] is True
    assert error["request_id"] == "r-1"


async def test_a_bug_is_an_internal_error_never_silence() -> None:
    sock, _ = await route(RuntimeError("boom"))
    [error] = [json.loads(t) for t in sock.texts]
    assert error["error"]["code"] == protocol.INTERNAL_ERROR and error["request_id"] == "r-1"
