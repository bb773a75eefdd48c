"""Hostile input on the WebSocket endpoint: every frame gets a documented answer or close.

A seeded generator (:func:`seclib.hostile_frames`) produces malformed, truncated, huge,
deeply nested, binary, wrong-type, unicode-trick and valid frames. Several fuzzing
connections send them one at a time and read the one answer each must get: an
``error`` with a documented code (the code the category calls for, where there is one)
or a routed answer. None of them may be closed. Meanwhile a bystander connection
pings, and every ping must be answered: other clients are unaffected. Afterwards the
gateway still accepts new connections.

The abuse cases that *do* close have their own tests: a frame far over the limit
(1009), a rate-limit flood (RATE_LIMITED, then 1008), and a client too slow to read
(1013). The short run (unmarked, in ``make test``) sends 1,500 frames; the slow one
(``make chaos``) 12,000.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from grpc import aio
from seclib import (
    ANSWER_TYPES,
    DOCUMENTED_CODES,
    SECRET,
    Gateway,
    gateway,
    hostile_frames,
)

from streamer import protocol, rpc
from streamer.api.v1 import connections_pb2, connections_pb2_grpc
from streamer.auth import make_token
from streamer.config import Settings

FRAME_LIMIT = 16 * 1024
ANSWER_TIMEOUT = 3.0
#: A fuzzing connection gives up after this many problems (keeps a broken build's run short).
MAX_PROBLEMS = 3
#: What each category must be answered with (None: any documented answer).
EXPECTED: dict[str, frozenset[str] | None] = {
    "malformed": frozenset({"VALIDATION_ERROR"}),
    "truncated": frozenset({"VALIDATION_ERROR"}),
    "huge": frozenset({"PAYLOAD_TOO_LARGE"}),
    "nested": frozenset({"VALIDATION_ERROR"}),
    "not_object": frozenset({"VALIDATION_ERROR"}),
    "empty": frozenset({"VALIDATION_ERROR"}),
}


@pytest.fixture
async def fuzz_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    # Rate limit off: the fuzzers send as fast as answers come back (the limit has its own test).
    async with gateway(settings, ws_max_frame_bytes=FRAME_LIMIT, ws_rate_limit=0.0) as gw:
        yield gw


def token(user: str = "fuzzer", tenant: str = "tenant-f") -> str:
    return make_token(secret=SECRET, user=user, tenant=tenant)


def _check_answer(category: str, raw: str) -> str | None:
    """A problem description, or None when ``raw`` is a documented answer for ``category``."""
    try:
        msg = json.loads(raw)
    except ValueError:
        return f"{category}: answer is not JSON: {raw[:80]!r}"
    if not isinstance(msg, dict) or msg.get("type") not in ANSWER_TYPES:
        return f"{category}: unexpected answer {raw[:120]!r}"
    if msg["type"] == "error":
        err = msg.get("error")
        if not isinstance(err, dict) or err.get("code") not in DOCUMENTED_CODES:
            return f"{category}: undocumented error {raw[:120]!r}"
        if err.get("code") in ("INTERNAL_ERROR", "SERVICE_UNAVAILABLE"):
            return f"{category}: server-side failure {raw[:160]!r}"
    wanted = EXPECTED.get(category)
    if wanted is not None:
        code = msg.get("error", {}).get("code") if msg["type"] == "error" else msg["type"]
        if code not in wanted:
            return f"{category}: expected {sorted(wanted)}, got {raw[:120]!r}"
    return None


async def _fuzz_one(
    session: aiohttp.ClientSession, url: str, frames: list[tuple[str, str | bytes]]
) -> tuple[collections.Counter[str], list[str]]:
    """Send frames one at a time on one connection; count answers, collect problems."""
    counts: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    ws = await session.ws_connect(url, headers={"Authorization": f"Bearer {token()}"}, max_msg_size=0)
    try:
        for category, frame in frames:
            if len(problems) >= MAX_PROBLEMS:
                break
            if ws.closed:
                problems.append(f"socket closed (code {ws.close_code}) before a {category} frame")
                ws = await session.ws_connect(
                    url, headers={"Authorization": f"Bearer {token()}"}, max_msg_size=0
                )
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            try:
                msg = await ws.receive(timeout=ANSWER_TIMEOUT)
            except TimeoutError:
                problems.append(f"{category}: no answer within {ANSWER_TIMEOUT}s to {str(frame)[:120]!r}")
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                problems.append(
                    f"{category}: got {msg.type.name} (close code {ws.close_code}) for {str(frame)[:120]!r}"
                )
                continue
            problem = _check_answer(category, msg.data)
            if problem:
                problems.append(problem + f" <- {str(frame)[:120]!r}")
            counts[category] += 1
    finally:
        await ws.close()
    return counts, problems


async def _bystander(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> tuple[int, list[str]]:
    """Ping-pong on its own connection until ``stop``; every ping must be answered."""
    problems: list[str] = []
    pongs = 0
    async with session.ws_connect(url, params={"token": token("bystander", "tenant-b")}) as ws:
        while not stop.is_set() and pongs < 100_000:
            await ws.send_str(json.dumps({"action": "$ping"}))
            try:
                msg = await ws.receive(timeout=ANSWER_TIMEOUT)
            except TimeoutError:
                problems.append("bystander: ping not answered")
                break
            if msg.type is not aiohttp.WSMsgType.TEXT or json.loads(msg.data).get("type") != "pong":
                problems.append(f"bystander: got {msg.type.name} {str(msg.data)[:80]!r}")
                break
            pongs += 1
            await asyncio.sleep(0.01)
    return pongs, problems


async def run_fuzz(gw: Gateway, *, total: int, connections: int, seed: int) -> collections.Counter[str]:
    frames = list(hostile_frames(seed, total, limit=FRAME_LIMIT))
    shards = [frames[i::connections] for i in range(connections)]
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        bystander = asyncio.create_task(_bystander(session, gw.ws_url, stop))
        results = await asyncio.gather(*(_fuzz_one(session, gw.ws_url, shard) for shard in shards))
        stop.set()
        pongs, bystander_problems = await bystander
        counts: collections.Counter[str] = collections.Counter()
        problems: list[str] = list(bystander_problems)
        for c, p in results:
            counts.update(c)
            problems.extend(p)
        # The server is still up and takes a new client.
        async with session.ws_connect(gw.ws_url, headers={"Authorization": f"Bearer {token()}"}) as ws:
            await ws.send_str('{"action":"$ping"}')
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
        async with session.get(f"{gw.http_url}/healthz") as resp:
            assert resp.status == 200
    summary = dict(sorted(counts.items()))
    print(f"\nws fuzz: {sum(counts.values())} frames answered by category {summary}; bystander pongs {pongs}")
    assert not problems, f"{len(problems)} problem(s), first ones:\n" + "\n".join(problems[:15])
    assert sum(counts.values()) == total, (sum(counts.values()), total)
    assert pongs > 0
    assert gw.router is not None and gw.router.bad_json == 0
    return counts


async def test_ws_fuzz_short(fuzz_gateway: Gateway) -> None:
    counts = await run_fuzz(fuzz_gateway, total=1_500, connections=6, seed=20261122)
    assert len(counts) >= 10  # every category was exercised


@pytest.mark.slow
async def test_ws_fuzz_long(fuzz_gateway: Gateway) -> None:
    await run_fuzz(fuzz_gateway, total=12_000, connections=8, seed=7)


# --------------------------------------------------------------------------- documented closes


async def test_lone_surrogate_payload_is_answered(fuzz_gateway: Gateway) -> None:
    """Regression: JSON text may carry a lone surrogate (``"\\ud800"``), which is not UTF-8.

    The gateway must answer it (VALIDATION_ERROR) rather than fail inside the route task
    and leave the client without an answer.
    """
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(fuzz_gateway.ws_url, headers={"Authorization": f"Bearer {token()}"}) as ws,
    ):
        for frame in (
            '{"action":"echo","id":"s-1","payload":{"m":"\\ud800"}}',
            '{"action":"echo","id":"s-2","metadata":{"m":"\\udfff"}}',
            '{"action":"echo","id":"s-3","payload":{"\\ud800":1}}',
        ):
            await ws.send_str(frame)
            msg = await ws.receive(timeout=ANSWER_TIMEOUT)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            answer = json.loads(msg.data)
            assert answer["type"] == "error" and answer["error"]["code"] == "VALIDATION_ERROR", answer
        await ws.send_str('{"action":"$ping"}')
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"


async def test_frame_far_over_limit_closes_1009(fuzz_gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(fuzz_gateway.ws_url, headers={"Authorization": f"Bearer {token()}"})
        await ws.send_str("x" * (FRAME_LIMIT * 4 + 10))
        msg = await ws.receive(timeout=ANSWER_TIMEOUT)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert ws.close_code == protocol.CLOSE_TOO_BIG
        await ws.close()
        # Just over the limit is answered and the socket stays open.
        async with session.ws_connect(
            fuzz_gateway.ws_url, headers={"Authorization": f"Bearer {token()}"}
        ) as ws2:
            await ws2.send_str("x" * (FRAME_LIMIT + 1))
            answer = json.loads((await ws2.receive(timeout=ANSWER_TIMEOUT)).data)
            assert answer["error"]["code"] == "PAYLOAD_TOO_LARGE"
            await ws2.send_str('{"action":"$ping"}')
            assert json.loads((await ws2.receive(timeout=5)).data)["type"] == "pong"


async def test_rate_limit_flood_closes_1008(settings: Settings) -> None:
    async with (
        gateway(settings, ws_rate_limit=5.0, ws_rate_burst=5, ws_rate_strikes=10) as gw,
        aiohttp.ClientSession() as session,
        session.ws_connect(gw.ws_url, headers={"Authorization": f"Bearer {token()}"}) as ws,
    ):
        for _ in range(200):
            if ws.closed:
                break
            with contextlib.suppress(ConnectionError):
                await ws.send_str('{"action":"$ping"}')
        codes: collections.Counter[str] = collections.Counter()
        for _ in range(400):
            msg = await ws.receive(timeout=ANSWER_TIMEOUT)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            codes[data.get("error", {}).get("code", data["type"])] += 1
        assert ws.close_code == protocol.CLOSE_POLICY
        assert codes["RATE_LIMITED"] >= 10 and codes["pong"] >= 5, codes


async def test_slow_reader_is_closed_1013(settings: Settings) -> None:
    async with gateway(settings, ws_send_queue=16) as gw, aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gw.ws_url, headers={"Authorization": f"Bearer {token()}"})
        conn_id = next(iter(gw.service.connections))
        frame = protocol.encode_bytes({"type": "message", "blob": "y" * 256 * 1024})
        async with rpc.channel(gw.grpc_target) as channel:
            stub = connections_pb2_grpc.ConnectionsStub(channel)
            results: list[Any] = []
            for _ in range(400):  # ~100 MiB offered to a client that never reads
                try:
                    resp = await stub.Send(
                        connections_pb2.SendRequest(connection_id=conn_id, frame=frame), timeout=5
                    )
                except aio.AioRpcError as exc:
                    results.append(exc.code().name)
                    break
                results.append(resp.delivered)
                if not resp.delivered:
                    break
        assert results[-1] in (False, "NOT_FOUND"), results[-5:]
        # Now read: whatever was flushed, then the close with 1013.
        for _ in range(1000):
            msg = await ws.receive(timeout=ANSWER_TIMEOUT)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
        assert ws.close_code == protocol.CLOSE_TRY_AGAIN
        await ws.close()
        assert conn_id not in gw.service.connections
