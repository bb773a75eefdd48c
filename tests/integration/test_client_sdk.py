"""The client SDK against a small in-test WebSocket server speaking Streamer's protocol.

The fake keeps requests across connections (like the real router + processor) so the
client's reconnect, ``$resume`` and idempotent re-send paths run over real sockets,
with faults the real stack cannot be told to produce on cue (drop the socket right
after an acknowledgment, swallow a frame, go silent, close with 4001).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streamer import protocol
from streamer.client import (
    ConnectionClosedError,
    NotFoundError,
    PayloadTooLargeError,
    Progress,
    RateLimitedError,
    RequestCancelledError,
    RequestHandle,
    RequestTimeoutError,
    StreamerClient,
    StreamerError,
    UnauthorizedError,
    error_class,
)

TOKEN = "good-token"


@dataclasses.dataclass
class FakeRequest:
    request_id: str
    action: str
    payload: dict[str, Any]
    status: str = "PENDING"
    percentage: float = 0
    result: Any = None
    seq: int = 0
    ws: web.WebSocketResponse | None = None
    task: asyncio.Task[None] | None = None


class FakeStreamer:
    """Just enough of connect + router + processor to exercise the client."""

    def __init__(self) -> None:
        self.requests: dict[str, FakeRequest] = {}
        self.frames: list[dict[str, Any]] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.connections = 0
        self.drop_after_ack: set[str] = set()  # request ids: abort the socket right after the ack
        self.swallow_once: set[str] = set()  # request ids: drop the socket without answering, once
        self.silent = False  # stop answering anything (a dead peer)
        self.refuse_resumes = 0  # answer this many $resume with SERVICE_UNAVAILABLE (router restarting)
        self.hide_from_resume: set[str] = set()  # request ids $resume does not mention (too old)
        self.resume_page = 1_000  # frames per $resume answer
        self.step = 0.02
        self.frame_limit = 10_000
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for req in self.requests.values():
            if req.task is not None:
                req.task.cancel()
        if self.runner is not None:
            runner, self.runner = self.runner, None
            for ws in self.sockets:
                self.abort(ws)
            await runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {TOKEN}" and request.query.get("token") != TOKEN:
            return web.json_response({"error": "bad token"}, status=401)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        self.connections += 1
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.PING:
                if not self.silent:
                    await ws.pong(msg.data)
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            if self.silent:
                continue
            if len(msg.data.encode()) > self.frame_limit:
                size = len(msg.data.encode())
                await self.send(
                    ws,
                    protocol.error_message(
                        protocol.PAYLOAD_TOO_LARGE,
                        "too big",
                        details={"size": size, "limit": self.frame_limit},
                    ),
                )
                continue
            frame = json.loads(msg.data)
            self.frames.append(frame)
            await self.on_frame(ws, frame)
        return ws

    async def send(self, ws: web.WebSocketResponse | None, msg: dict[str, Any]) -> None:
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps(msg))

    @staticmethod
    def abort(ws: web.WebSocketResponse) -> None:
        transport = ws._req.transport if ws._req is not None else None  # type: ignore[attr-defined]
        if transport is not None:
            transport.abort()

    def status_frame(self, req: FakeRequest, **extra: Any) -> dict[str, Any]:
        fields: dict[str, Any] = dict(extra)
        if req.status == "COMPLETED":
            fields["result"] = req.result
        return protocol.status_message(
            req.request_id, status=req.status, percentage=req.percentage, message=req.status.lower(), **fields
        )

    async def on_frame(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        action = frame["action"]
        rid = str(frame.get("id") or "")
        payload = frame.get("payload") or {}
        if action == "$ping":
            await self.send(ws, protocol.pong_message())
            return
        if action.startswith("$"):
            await self.system(ws, action, rid, payload)
            return
        if rid in self.swallow_once:
            self.swallow_once.discard(rid)
            self.abort(ws)
            return
        existing = self.requests.get(rid)
        if existing is not None:  # idempotent re-send
            existing.ws = ws
            await self.send(ws, self.status_frame(existing))
            return
        if action == "echo":
            self.requests[rid] = FakeRequest(rid, action, payload, status="COMPLETED", result=payload)
            await self.send(ws, protocol.response_message(rid, payload))
        elif action == "fail":
            code = payload.get("code", protocol.PROCESSING_FAILED)
            await self.send(ws, protocol.error_message(code, f"failed with {code}", request_id=rid))
        elif action == "limited":  # the gateway's token bucket: an error naming no request
            await self.send(ws, protocol.error_message(protocol.RATE_LIMITED, "slow down", retryable=True))
        elif action == "never":
            await self.send(ws, protocol.acknowledgment_message(rid))
        elif action == "slow":
            req = FakeRequest(rid, action, payload, ws=ws)
            self.requests[rid] = req
            await self.send(ws, protocol.acknowledgment_message(rid))
            if rid in self.drop_after_ack:
                self.abort(ws)
            req.task = asyncio.create_task(self.process(req, steps=int(payload.get("steps", 4))))
        else:
            await self.send(ws, protocol.error_message(protocol.INVALID_ACTION, "unknown", request_id=rid))

    async def process(self, req: FakeRequest, *, steps: int) -> None:
        req.status = "PROCESSING"
        for i in range(steps + 1):
            await asyncio.sleep(self.step)
            if req.status == "CANCELLED":
                return
            req.seq += 1
            req.percentage = round(100 * i / steps)
            msg = protocol.progress_message(
                req.request_id, percentage=req.percentage, message=f"step {i}", seq=req.seq
            )
            await self.send(req.ws, msg)
        req.status = "COMPLETED"
        req.result = {"echo": req.payload}
        await self.send(req.ws, protocol.complete_message(req.request_id, req.result))

    async def system(self, ws: web.WebSocketResponse, action: str, rid: str, payload: dict[str, Any]) -> None:
        if action == "$resume":
            if self.refuse_resumes > 0:
                self.refuse_resumes -= 1
                await self.send(
                    ws, protocol.error_message(protocol.SERVICE_UNAVAILABLE, "router down", request_id=rid)
                )
                return
            # Paged like the router's (resume_page frames an answer, then resume_cursor).
            listed = [r for r in self.requests.values() if r.request_id not in self.hide_from_resume]
            start = int(payload.get("cursor") or 0)
            page = listed[start : start + self.resume_page]
            for i, req in enumerate(page):
                if req.status in ("PENDING", "PROCESSING"):
                    req.ws = ws
                frame = self.status_frame(req, resumed=True)
                if i == len(page) - 1 and start + len(page) < len(listed):
                    frame["resume_cursor"] = str(start + len(page))
                await self.send(ws, frame)
            return
        target = str(payload.get("request_id"))
        found = self.requests.get(target)
        if found is None:
            await self.send(ws, protocol.error_message(protocol.NOT_FOUND, "not found", request_id=target))
            return
        req = found
        if action == "$cancel" and req.status in ("PENDING", "PROCESSING"):
            req.status = "CANCELLED"
        if action == "$subscribe":
            req.ws = ws
        await self.send(ws, self.status_frame(req))


@pytest.fixture
async def fake() -> AsyncIterator[FakeStreamer]:
    server = FakeStreamer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def client(fake: FakeStreamer, **kw: Any) -> StreamerClient:
    kw.setdefault("token", TOKEN)
    kw.setdefault("reconnect_delay", 0.02)
    return StreamerClient(fake.url, **kw)


async def test_sync_request_returns_data(fake: FakeStreamer) -> None:
    async with client(fake) as c:
        assert await c.request("echo", {"message": "hi"}) == {"message": "hi"}
    assert fake.frames[0]["action"] == "echo" and fake.frames[0]["payload"] == {"message": "hi"}


async def test_async_request_reports_ordered_progress_and_returns_the_result(fake: FakeStreamer) -> None:
    seen: list[Progress] = []
    async with client(fake) as c:
        result = await c.request("slow", {"steps": 4}, on_progress=seen.append, request_id="r-1")
    assert result == {"echo": {"steps": 4}}
    assert [p.percentage for p in seen] == [0, 25, 50, 75, 100]
    assert [p.seq for p in seen] == [1, 2, 3, 4, 5]
    assert all(p.request_id == "r-1" for p in seen)


async def test_async_on_progress_callbacks_are_awaited(fake: FakeStreamer) -> None:
    seen: list[float] = []

    async def on_progress(p: Progress) -> None:
        await asyncio.sleep(0)
        seen.append(p.percentage)

    async with client(fake) as c:
        await c.request("slow", {"steps": 2}, on_progress=on_progress)
        await asyncio.sleep(0.05)
    assert seen == [0, 50, 100]


@pytest.mark.parametrize("code", sorted(protocol.ERROR_CODES - {protocol.INVALID_ACTION}))
async def test_each_error_code_raises_its_class(fake: FakeStreamer, code: str) -> None:
    async with client(fake) as c:
        with pytest.raises(StreamerError) as info:
            await c.request("fail", {"code": code}, request_id="e-1")
    err = info.value
    assert type(err) is error_class(code)
    assert err.code == code and err.request_id == "e-1"
    assert err.retryable == (code in protocol.RETRYABLE_CODES)


async def test_error_classes_cover_every_code() -> None:
    assert {error_class(code).code for code in protocol.ERROR_CODES} == set(protocol.ERROR_CODES)
    assert error_class("SOMETHING_NEW") is StreamerError


async def test_bad_token_raises_unauthorized_before_any_socket(fake: FakeStreamer) -> None:
    with pytest.raises(UnauthorizedError):
        async with client(fake, token="bad"):
            pass
    assert fake.connections == 0


async def test_token_in_query_parameter(fake: FakeStreamer) -> None:
    async with client(fake, token_in="query") as c:
        assert await c.request("echo", {"a": 1}) == {"a": 1}


async def test_token_provider_is_called_for_each_connection(fake: FakeStreamer) -> None:
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        return TOKEN

    fake.drop_after_ack.add("p-1")
    async with client(fake, token=provider) as c:
        await c.request("slow", {"steps": 2}, request_id="p-1", timeout=5)
    assert calls == 2


async def test_events_yield_every_message_then_end(fake: FakeStreamer) -> None:
    async with client(fake) as c:
        handle = await c.start("slow", {"steps": 2}, request_id="ev-1")
        kinds = [m["type"] async for m in c.events("ev-1")]
        assert await handle == {"echo": {"steps": 2}}
        # A late iterator replays the whole history and ends.
        late = [m["type"] async for m in handle.events()]
    assert kinds == ["acknowledgment", "progress", "progress", "progress", "complete"]
    assert late == kinds


async def test_reconnect_resumes_an_acknowledged_request(fake: FakeStreamer) -> None:
    fake.drop_after_ack.add("rc-1")
    seen: list[float] = []
    async with client(fake) as c:
        result = await c.request(
            "slow", {"steps": 5}, request_id="rc-1", on_progress=lambda p: seen.append(p.percentage)
        )
        assert c.reconnects == 1
    assert result == {"echo": {"steps": 5}}
    assert fake.connections == 2
    assert any(f["action"] == "$resume" for f in fake.frames)
    assert seen == sorted(seen) and len(seen) == len(set(seen))


async def test_a_refused_resume_is_sent_again(fake: FakeStreamer) -> None:
    # The reconnect races a router restart: $resume is refused (retryable) twice. Without a
    # retry the request is never re-attached and its result is lost (found by the chaos run).
    fake.drop_after_ack.add("rr-1")
    fake.refuse_resumes = 2
    async with client(fake) as c:
        result = await c.request("slow", {"steps": 5}, request_id="rr-1", timeout=20)
    assert result == {"echo": {"steps": 5}}
    assert sum(f["action"] == "$resume" for f in fake.frames) == 3
    assert fake.refuse_resumes == 0


async def test_requests_resume_does_not_mention_are_asked_for_with_subscribe(fake: FakeStreamer) -> None:
    # $resume looks back a bounded window: a request out of it is asked for by id, one that
    # $resume answered is not, and one the server no longer has ends NOT_FOUND.
    fake.hide_from_resume.update({"old-1", "gone-1"})
    fake.drop_after_ack.add("new-1")
    async with client(fake, resume_grace=0.2) as c:
        old = await c.start("slow", {"steps": 3}, request_id="old-1")
        gone = await c.start("slow", {"steps": 3}, request_id="gone-1")
        for handle in (old, gone):
            await asyncio.wait_for(_acknowledged(handle), timeout=10)
        del fake.requests["gone-1"]  # past its TTL
        new = await c.start("slow", {"steps": 3}, request_id="new-1")  # the socket drops after its ack
        assert await old.result(timeout=20) == {"echo": {"steps": 3}}
        assert await new.result(timeout=20) == {"echo": {"steps": 3}}
        with pytest.raises(NotFoundError):
            await gone.result(timeout=20)
        assert c.reconnects == 1
    subscribed = sorted(f["payload"]["request_id"] for f in fake.frames if f["action"] == "$subscribe")
    assert subscribed == ["gone-1", "old-1"]


async def _acknowledged(handle: RequestHandle) -> None:
    async with contextlib.aclosing(handle.events()) as events:
        async for msg in events:
            if msg["type"] == "acknowledgment":
                return


async def test_reconnect_resends_a_frame_the_server_never_answered(fake: FakeStreamer) -> None:
    fake.swallow_once.add("rs-1")
    async with client(fake) as c:
        assert await c.request("echo", {"x": 1}, request_id="rs-1", timeout=5) == {"x": 1}
        assert c.reconnects == 1
    # The same frame, same id, once per connection: the id makes the re-send idempotent.
    assert [f["id"] for f in fake.frames if f["action"] == "echo"] == ["rs-1", "rs-1"]


async def test_silent_server_is_detected_and_the_client_reconnects(fake: FakeStreamer) -> None:
    async with client(fake, heartbeat=0.1) as c:
        fake.silent = True
        await asyncio.sleep(0.5)
        fake.silent = False
        assert await c.request("echo", {"ok": True}, timeout=5) == {"ok": True}
        assert c.reconnects >= 1


async def test_heartbeat_sends_ping_frames(fake: FakeStreamer) -> None:
    async with client(fake, heartbeat=0.05):
        await asyncio.sleep(0.3)
    assert sum(1 for f in fake.frames if f["action"] == "$ping") >= 2


async def test_ping_returns_pong(fake: FakeStreamer) -> None:
    async with client(fake) as c:
        assert (await c.ping())["type"] == "pong"


async def test_giving_up_fails_pending_requests(fake: FakeStreamer) -> None:
    async with client(fake, max_reconnect_attempts=2) as c:
        handle = await c.start("never", request_id="gu-1")
        await asyncio.sleep(0.05)
        await fake.stop()
        with pytest.raises(ConnectionClosedError):
            await handle.result(timeout=5)


async def test_no_reconnect_after_close_4001(fake: FakeStreamer) -> None:
    async with client(fake) as c:
        handle = await c.start("never", request_id="d-1")
        await asyncio.sleep(0.05)
        await fake.sockets[-1].close(code=protocol.CLOSE_DISCONNECTED, message=b"bye")
        with pytest.raises(ConnectionClosedError):
            await handle.result(timeout=5)
        assert c.reconnects == 0


async def test_client_timeout_raises_request_timeout(fake: FakeStreamer) -> None:
    async with client(fake) as c:
        with pytest.raises(RequestTimeoutError) as info:
            await c.request("never", timeout=0.1, request_id="t-1")
    assert info.value.request_id == "t-1" and info.value.retryable


async def test_oversized_frame_error_is_attributed_by_size(fake: FakeStreamer) -> None:
    fake.frame_limit = 200
    async with client(fake) as c:
        with pytest.raises(PayloadTooLargeError) as info:
            await c.request("echo", {"blob": "x" * 500}, request_id="big-1", timeout=5)
    assert info.value.request_id == "big-1"


async def test_rate_limit_without_id_is_attributed_to_the_only_unanswered_request(fake: FakeStreamer) -> None:
    async with client(fake) as c:
        with pytest.raises(RateLimitedError) as info:
            await c.request("limited", request_id="rl-1", timeout=5)
    assert info.value.request_id == "rl-1" and info.value.retryable


async def test_status_cancel_subscribe_unsubscribe(fake: FakeStreamer) -> None:
    fake.step = 0.05
    async with client(fake) as owner, client(fake) as other:
        handle = await owner.start("slow", {"steps": 40}, request_id="s-1")
        await asyncio.sleep(0.1)
        status = await other.status("s-1")
        assert status["type"] == "status" and status["status"] == "PROCESSING"
        sub = await other.subscribe("s-1")
        assert sub.subscribed
        cancelled = await owner.cancel("s-1")
        assert cancelled["status"] == "CANCELLED"
        with pytest.raises(RequestCancelledError):
            await handle.result(timeout=5)
        with pytest.raises(NotFoundError):
            await other.status("nope")
        await other.unsubscribe("s-1")


async def test_subscriber_receives_progress_and_result(fake: FakeStreamer) -> None:
    fake.step = 0.05
    async with client(fake) as owner, client(fake) as other:
        handle = await owner.start("slow", {"steps": 6}, request_id="sub-1")
        await asyncio.sleep(0.08)
        sub = await other.subscribe("sub-1")
        assert await sub.result(timeout=5) == {"echo": {"steps": 6}}
        assert any(m["type"] == "progress" for m in sub.messages)
        # The owner lost its socket to the subscriber in this fake: resume gets it back.
        await owner.resume()
        assert await handle.result(timeout=5) == {"echo": {"steps": 6}}


async def test_a_paged_resume_is_followed_to_its_last_page(fake: FakeStreamer) -> None:
    # Issue #18 item 5: the router answers $resume in pages; a client that stopped after the
    # first never re-attached the requests on later pages, and their results went to the
    # dead connection.
    fake.resume_page = 2
    fake.step = 0.05
    ids = [f"pg-{i}" for i in range(5)]
    fake.drop_after_ack.update(ids)
    async with client(fake) as c:
        results = await asyncio.gather(
            *(
                c.request("slow", {"steps": 4, "i": i}, request_id=rid, timeout=20)
                for i, rid in enumerate(ids)
            )
        )
    assert results == [{"echo": {"steps": 4, "i": i}} for i in range(len(ids))]
    cursors = [f["payload"].get("cursor") for f in fake.frames if f["action"] == "$resume"]
    assert "2" in cursors and "4" in cursors


async def test_resume_collects_frames_when_asked(fake: FakeStreamer) -> None:
    async with client(fake) as c:
        await c.request("echo", {"x": 1}, request_id="old-1")
        frames = await c.resume(wait=0.2)
    assert [f["request_id"] for f in frames] == ["old-1"]
    assert frames[0]["resumed"] is True


async def test_close_fails_pending_requests(fake: FakeStreamer) -> None:
    c = client(fake)
    await c.connect()
    handle = await c.start("never")
    await c.close()
    with pytest.raises(ConnectionClosedError):
        await handle.result(timeout=1)
