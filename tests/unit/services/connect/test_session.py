"""A socket's send queue, bounded by frames and by bytes (no network: the socket is not
started, so every frame is queued, as when the transport is back-pressured)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiohttp import web

from services.connect.limits import Strikes, TokenBucket
from services.connect.session import ClientConnection
from streamer import protocol
from streamer.auth import Identity
from streamer.store import ConnectionRecord


def socket(*, frames: int, max_bytes: int | None) -> ClientConnection:
    record = ConnectionRecord.new(connection_id="c-1", user_id="u", tenant_id="t", endpoint="127.0.0.1:1")
    identity = Identity(user_id="u", tenant_id="t", permissions=(), expires_at=None, claims={})
    return ClientConnection(
        record=record,
        identity=identity,
        ws=cast(web.WebSocketResponse, cast(Any, object())),
        queue_limit=frames,
        queue_bytes_limit=max_bytes,
        bucket=TokenBucket(rate=0, burst=1),
        strikes=Strikes(allowed=1),
    )


async def test_frames_over_the_byte_bound_close_with_1013_like_a_full_queue() -> None:
    conn = socket(frames=100, max_bytes=10)
    assert conn.send_text("aaaaa") is True
    assert conn.send_text("bbbb") is True
    assert conn.queued_bytes == 9
    assert conn.send_text("cc") is False  # 11 bytes would wait: too slow to read
    assert conn.closing and conn.close_code == protocol.CLOSE_TRY_AGAIN
    assert conn.disconnect_reason == "slow_reader"


async def test_bytes_are_counted_in_utf8() -> None:
    conn = socket(frames=100, max_bytes=10)
    assert conn.send_text("é") is True  # 2 bytes
    assert conn.send_text("ééé") is True  # 6 bytes
    assert conn.queued_bytes == 8
    assert conn.send_text("éé") is False


async def test_one_frame_larger_than_the_bound_is_queued_when_nothing_else_is() -> None:
    conn = socket(frames=100, max_bytes=10)
    assert conn.send_text("x" * 50) is True  # one large result must still get through
    assert not conn.closing
    assert conn.send_text("y") is False  # but nothing may wait behind it


async def test_the_frame_count_still_bounds_the_queue_and_closing_empties_the_count() -> None:
    conn = socket(frames=3, max_bytes=None)
    for _ in range(3):
        assert conn.send_text("z") is True
    assert conn.send_text("z") is False
    assert conn.closing and conn.close_code == protocol.CLOSE_TRY_AGAIN
    conn._discard_queued()
    assert conn.queued_bytes == 0 and conn.queued_frames == 0


@pytest.mark.parametrize("max_bytes", [1, 1024])
async def test_a_closing_socket_queues_nothing(max_bytes: int) -> None:
    conn = socket(frames=10, max_bytes=max_bytes)
    conn.close(code=1000, reason="bye", why="client", flush=False)
    assert conn.send_text("a") is False and conn.queued_bytes == 0


async def test_an_idle_socket_holds_no_queue_and_no_writer_task() -> None:
    conn = socket(frames=10, max_bytes=None)
    assert conn._queue is None and conn._writer is None
    assert not hasattr(conn, "__dict__")  # slots: thousands of these per pod
    assert conn.send_text("a") is True  # not started: it waits, but no writer before start()
    assert conn.queued_frames == 1 and conn._writer is None
