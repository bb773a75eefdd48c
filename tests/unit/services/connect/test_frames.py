"""The frame handler's policy for one client frame, with a fake socket (no network)."""

from __future__ import annotations

import json
from typing import Any, cast

from services.connect.frames import FrameHandler
from services.connect.limits import MAX_IN_FLIGHT, FramePolicy, Strikes, TokenBucket
from services.connect.session import ClientConnection
from streamer import protocol


class FakeSocket:
    def __init__(self, *, rate: float = 0.0, burst: int = 1, strikes: int = 2) -> None:
        self.closing = False
        self.closed_with: tuple[int, str] | None = None
        self.sent: list[dict[str, Any]] = []
        self.inflight: set[object] = set()
        self.bucket = TokenBucket(rate=rate, burst=burst, clock=lambda: 0.0)
        self.strikes = Strikes(allowed=strikes)
        self.alive_calls = 0

    def alive(self) -> None:
        self.alive_calls += 1

    def close(self, *, code: int, reason: str, why: str, flush: bool) -> None:
        self.closing = True
        self.closed_with = (code, why)

    def send_message(self, message: dict[str, Any]) -> bool:
        self.sent.append(message)
        return True


def handler(limit: int = 100) -> tuple[FrameHandler, list[tuple[str, str]], list[object]]:
    routed: list[tuple[str, str]] = []
    seen: list[object] = []
    frames = FrameHandler(
        policy=FramePolicy(limit=limit),
        dispatch=lambda conn, message, rid: routed.append((message.action, rid)),
        seen=seen.append,
        max_frame_bytes=limit,
    )
    return frames, routed, seen


def feed(frames: FrameHandler, sock: FakeSocket, data: str) -> None:
    frames.on_frame(cast(ClientConnection, sock), data, len(data.encode()))


def test_a_valid_message_is_dispatched_with_its_id_and_the_client_counts_as_seen() -> None:
    frames, routed, seen = handler()
    sock = FakeSocket()
    feed(frames, sock, json.dumps({"action": "echo", "request_id": "r-1", "payload": {}}))
    assert routed == [("echo", "r-1")]
    assert sock.alive_calls == 1 and seen == [sock] and sock.sent == []


def test_ping_is_answered_here_and_never_routed() -> None:
    frames, routed, _ = handler()
    sock = FakeSocket()
    feed(frames, sock, json.dumps({"action": protocol.PING}))
    assert routed == [] and [m["type"] for m in sock.sent] == ["pong"]


def test_sizes_over_the_limit_are_refused_and_far_over_it_close() -> None:
    frames, routed, _ = handler(limit=100)
    sock = FakeSocket()
    feed(frames, sock, "x" * 101)
    assert sock.sent[-1]["error"]["code"] == protocol.PAYLOAD_TOO_LARGE and not sock.closing
    feed(frames, sock, "x" * 401)
    assert sock.closed_with == (protocol.CLOSE_TOO_BIG, "too_large")
    assert routed == []


def test_malformed_frames_get_their_error_and_the_socket_stays() -> None:
    frames, routed, _ = handler()
    sock = FakeSocket()
    feed(frames, sock, "{not json")
    assert sock.sent[-1]["type"] == "error" and not sock.closing and routed == []


def test_the_rate_limit_answers_then_closes_after_the_strikes() -> None:
    frames, routed, _ = handler()
    sock = FakeSocket(rate=1.0, burst=1, strikes=2)  # the clock never moves: one token in all
    message = json.dumps({"action": "echo", "request_id": "r-2", "payload": {}})
    for _ in range(3):
        feed(frames, sock, message)
    assert routed == [("echo", "r-2")]
    assert [m["error"]["code"] for m in sock.sent] == [protocol.RATE_LIMITED, protocol.RATE_LIMITED]
    assert sock.sent[0]["request_id"] == "r-2" and not sock.closing
    feed(frames, sock, message)
    assert sock.closed_with == (protocol.CLOSE_POLICY, "rate_limit")


def test_more_than_the_in_flight_cap_is_refused() -> None:
    frames, routed, _ = handler()
    sock = FakeSocket()
    sock.inflight = {object() for _ in range(MAX_IN_FLIGHT)}
    feed(frames, sock, json.dumps({"action": "echo", "request_id": "r-3", "payload": {}}))
    assert routed == [] and sock.sent[-1]["error"]["code"] == protocol.RATE_LIMITED


def test_a_frame_after_our_close_is_ignored() -> None:
    frames, routed, _ = handler()
    sock = FakeSocket()
    sock.closing = True
    feed(frames, sock, json.dumps({"action": protocol.PING}))
    assert sock.sent == [] and routed == []
