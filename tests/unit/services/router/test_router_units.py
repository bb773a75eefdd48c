"""Pure parts of the router: frames from stored requests, sync replay memory, helpers."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from services.router.call import Call, RouteContext
from services.router.middleware import missing_permissions, outcome_of
from services.router.publish import InvalidPublish, parse_message
from services.router.route import SyncReplay, _priority
from services.router.states import outcome_frame, status_frame
from streamer.api.v1 import common_pb2, router_pb2
from streamer.protocol import ProtocolError, encode_bytes, error_message, response_message
from streamer.store import CANCELLED, COMPLETED, FAILED, PENDING, PROCESSING, RequestRecord


def record(**changes: Any) -> RequestRecord:
    base = RequestRecord.new(
        request_id="r-1", action="echo_async", user_id="u", tenant_id="t", connection_id="c", payload={}
    )
    return dataclasses.replace(base, **changes)


def call(request_id: str = "r-1", user: str = "u", tenant: str = "t", **kw: Any) -> Call:
    return Call(
        connection_id="c",
        user_id=user,
        tenant_id=tenant,
        permissions=(),
        action="echo",
        request_id=request_id,
        payload={},
        metadata=kw.pop("metadata", {}),
        **kw,
    )


def test_status_frame_of_each_state() -> None:
    pending = status_frame(record())
    assert (pending["type"], pending["status"], pending["percentage"], pending["message"]) == (
        "status",
        PENDING,
        0,
        "Queued",
    )
    assert "result" not in pending and "error" not in pending
    running = status_frame(record(status=PROCESSING, progress={"percentage": 42.5, "message": "Half"}))
    assert (running["percentage"], running["message"]) == (42.5, "Half")
    done = status_frame(record(status=COMPLETED, result={"a": 1}, finished_at=1.0))
    assert (done["percentage"], done["result"], done["finished_at"]) == (
        100,
        {"a": 1},
        "1970-01-01T00:00:01.000Z",
    )
    # Found by hand: a handler whose last report was 66 % read "COMPLETED, 66" on $status/$resume.
    stopped_early = record(status=COMPLETED, result={}, progress={"percentage": 66.7, "message": "step 2"})
    assert (status_frame(stopped_early)["percentage"], status_frame(stopped_early)["message"]) == (
        100,
        "step 2",
    )
    failed = status_frame(record(status=FAILED, error={"code": "PROCESSING_FAILED", "message": "boom"}))
    assert failed["message"] == "boom" and failed["error"]["code"] == "PROCESSING_FAILED"
    cancelling = status_frame(record(status=PROCESSING, cancel_requested=True))
    assert cancelling["cancel_requested"] is True and cancelling["message"] == "Cancellation requested"
    assert status_frame(record(), subscribed=None, resumed=True)["resumed"] is True
    assert "subscribed" not in status_frame(record(), subscribed=None)


def test_outcome_frame_of_each_state() -> None:
    assert outcome_frame(record())["type"] == "status"
    assert outcome_frame(record(status=COMPLETED, result=[1], finished_at=2.0)) == {
        "type": "complete",
        "request_id": "r-1",
        "success": True,
        "result": [1],
        "timestamp": "1970-01-01T00:00:02.000Z",
    }
    failed = outcome_frame(
        record(status=FAILED, error={"code": "TIMEOUT", "message": "slow", "retryable": True})
    )
    assert failed["error"] == {"code": "TIMEOUT", "message": "slow", "retryable": False}
    cancelled = outcome_frame(record(status=CANCELLED))
    assert cancelled["error"]["code"] == "CANCELLED"
    weird = outcome_frame(record(status=FAILED, error={"code": "MADE_UP", "message": "?"}))
    assert weird["error"]["code"] == "PROCESSING_FAILED"


def test_outcome_of_and_permissions() -> None:
    assert outcome_of([response_message("r", {})]) == "response"
    assert outcome_of([{"type": "status"}, error_message("NOT_FOUND", "x")]) == "NOT_FOUND"
    assert outcome_of([]) == "none"
    assert missing_permissions(["a", "b"], ["b", "c"]) == ["a"]
    assert missing_permissions([], []) == []


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, 4),
        ({"priority": 7}, 7),
        ({"priority": -3}, 0),
        ({"priority": 11}, 10),
        ({"priority": True}, 4),
        ({"priority": 2.0}, 2),
        ({"priority": 2.5}, 4),
        ({"priority": "9"}, 4),
    ],
)
def test_priority(metadata: dict[str, Any], expected: int) -> None:
    assert _priority(call(metadata=metadata), 4) == expected


def test_parse_publish_message() -> None:
    assert parse_message(b'{"n":1}') == {"type": "message", "n": 1}
    assert parse_message(b'{"type":"notice"}') == {"type": "notice"}
    assert parse_message(b'{"type":"","n":1}') == {"type": "message", "n": 1}
    for bad in (b"", b"[1]", b"{x", b'"s"', b'{"message":"\\ud800"}'):
        with pytest.raises(InvalidPublish):
            parse_message(bad)


def test_call_from_pb() -> None:
    msg = router_pb2.RouteRequest(
        connection_id="c",
        principal=common_pb2.Principal(user_id="u", tenant_id="t", permissions=["p"]),
        action="echo",
        request_id="",
        payload=b'{"a":1}',
    )
    decoded = Call.from_pb(msg, deadline=3.0)
    assert decoded.request_id.startswith("req-") and decoded.payload == {"a": 1} and decoded.metadata == {}
    assert (decoded.permissions, decoded.deadline) == (("p",), 3.0)
    msg.payload = b"[1]"
    with pytest.raises(ProtocolError) as info:
        Call.from_pb(msg)
    assert info.value.code == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("10.0.0.7:50052", "10.0.0.7:50052"),
        ("[fd00::7]:50052", "[fd00::7]:50052"),
        ("connect-0.connect.streamer.svc:50052", "connect-0.connect.streamer.svc:50052"),
        ("", ""),
        ("no-port", ""),
        ("dns://10.0.0.10/connect:1", ""),  # only a pod's own address, never a resolver hop
        ("x" * 300 + ":1", ""),
    ],
)
def test_the_connection_endpoint_is_a_plain_address_or_nothing(sent: str, kept: str) -> None:
    msg = router_pb2.RouteRequest(
        connection_id="c1",
        principal=common_pb2.Principal(user_id="u", tenant_id="t"),
        action="echo",
        request_id="r1",
        connection_endpoint=sent,
    )
    assert Call.from_pb(msg).connection_endpoint == kept


class Answers:
    def __init__(self, *frames: dict[str, Any]) -> None:
        self.frames = list(frames)
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, ctx: RouteContext) -> list[dict[str, Any]]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return [self.frames.pop(0)]


async def test_sync_replay_remembers_per_owner() -> None:
    replay = SyncReplay()
    answers = Answers(response_message("r-1", 1), response_message("r-1", 2))
    c = call()
    assert (await replay.run(c, answers, RouteContext(call=c)))["data"] == 1
    assert (await replay.run(c, answers, RouteContext(call=c)))["data"] == 1
    assert answers.calls == 1
    other = call(user="v")
    dup = await replay.run(other, answers, RouteContext(call=other))
    assert dup["error"]["code"] == "DUPLICATE_REQUEST"
    assert answers.calls == 1


async def test_sync_replay_forgets_retryable_errors_and_expired_entries() -> None:
    replay = SyncReplay(ttl=0.0)
    c = call()
    answers = Answers(
        error_message("SERVICE_UNAVAILABLE", "down", request_id="r-1"),
        response_message("r-1", 1),
        response_message("r-1", 2),
    )
    assert (await replay.run(c, answers, RouteContext(call=c)))["type"] == "error"
    assert (await replay.run(c, answers, RouteContext(call=c)))["data"] == 1
    assert (await replay.run(c, answers, RouteContext(call=c)))["data"] == 2  # ttl 0: nothing kept
    assert answers.calls == 3


async def test_sync_replay_bounds() -> None:
    replay = SyncReplay(max_entries=2, max_frame_bytes=200)
    for i in range(4):
        c = call(request_id=f"r-{i}")
        await replay.run(c, Answers(response_message(c.request_id, i)), RouteContext(call=c))
    assert len(replay) == 2
    big = call(request_id="big")
    await replay.run(big, Answers(response_message("big", "x" * 500)), RouteContext(call=big))
    assert len(replay) == 2


async def test_sync_replay_memory_is_bounded_by_bytes_too() -> None:
    """Issue #18 item 5: 10,000 answers of 64 KiB each could hold 640 MB."""
    replay = SyncReplay(max_bytes=4_000)
    for i in range(40):
        c = call(request_id=f"r-{i}")
        await replay.run(c, Answers(response_message(c.request_id, "x" * 900)), RouteContext(call=c))
        assert replay.bytes <= 4_000
    assert 1 <= len(replay) <= 4
    assert replay.bytes == sum(len(encode_bytes(e.frame)) for e in replay._done.values())
    newest = call(request_id="r-39")  # the newest answers are the ones kept
    assert (await replay.run(newest, Answers(), RouteContext(call=newest)))["data"] == "x" * 900


async def test_sync_replay_shares_a_running_answer() -> None:
    replay = SyncReplay()
    answers = Answers(response_message("r-1", 1), response_message("r-1", 2))
    answers.gate = asyncio.Event()
    c = call()
    first = asyncio.create_task(replay.run(c, answers, RouteContext(call=c)))
    await asyncio.sleep(0)
    second = asyncio.create_task(replay.run(c, answers, RouteContext(call=c)))
    await asyncio.sleep(0)
    answers.gate.set()
    assert (await first) == (await second)
    assert answers.calls == 1


async def test_sync_replay_reruns_when_the_first_caller_went_away() -> None:
    replay = SyncReplay()
    answers = Answers(response_message("r-1", 1), response_message("r-1", 2))
    answers.gate = asyncio.Event()
    c = call()
    first = asyncio.create_task(replay.run(c, answers, RouteContext(call=c)))
    await asyncio.sleep(0)
    second = asyncio.create_task(replay.run(c, answers, RouteContext(call=c)))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    answers.gate.set()
    assert (await second)["data"] == 1  # the abandoned first run never answered
    assert answers.calls == 2
    assert first.cancelled()
