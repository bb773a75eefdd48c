"""Hostile input on the gRPC servers: invalid messages, hostile field values, oversize payloads.

The servers are the real ones, in this process on 127.0.0.1: the handler SDK's server
running the example handlers, and the connect service's ``Connections`` server. Each
gets a small message cap (64 KiB) so oversize checks are cheap; one test checks the
default cap (``Settings.grpc_max_message_bytes``, 4 MiB) on its own.

What "survives" means here: every call ends with a status the contract documents
(OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED over the cap) — never UNKNOWN,
which is what grpc answers when a servicer raised — except that bytes which are not a
protobuf message at all are refused by the grpc runtime itself before any Streamer
code runs (UNKNOWN/INTERNAL "Error parsing message"). Afterwards health checking still
says SERVING and a valid call still works.
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import AsyncIterator

import pytest
from grpc import aio
from seclib import Gateway, assert_serving, fuzz_raw, gateway, methods_of

from examples.handlers import handlers
from streamer import protocol, rpc
from streamer.api.v1 import (
    common_pb2,
    connections_pb2,
    connections_pb2_grpc,
    handler_pb2,
    handler_pb2_grpc,
)
from streamer.config import Settings, load_settings
from streamer.sdk import HandlerServer

CAP = 64 * 1024
HANDLER_METHODS = methods_of(handler_pb2.DESCRIPTOR, handler_pb2)
CONNECTIONS_METHODS = methods_of(connections_pb2.DESCRIPTOR, connections_pb2)


@pytest.fixture
async def handler_target() -> AsyncIterator[str]:
    server = HandlerServer(actions=handlers(), name="fuzzed", max_message_bytes=CAP)
    port = await server.start(host="127.0.0.1", port=0)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=0.5)


@pytest.fixture
async def connect_gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings, grpc_max_message_bytes=CAP) as gw:
        yield gw


async def test_handler_server_survives_random_bytes(handler_target: str) -> None:
    seen = await fuzz_raw(handler_target, HANDLER_METHODS, per_method=120, seed=1)
    assert seen["OK"] > 0  # some mutations are still valid messages: the fuzz reached our code


async def test_connections_server_survives_random_bytes(connect_gw: Gateway) -> None:
    seen = await fuzz_raw(connect_gw.grpc_target, CONNECTIONS_METHODS, per_method=120, seed=2)
    assert seen["NOT_FOUND"] + seen["INVALID_ARGUMENT"] > 0


HOSTILE_JSON: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b'"echo"',
    b"1e999999",
    b"NaN",
    b'{"message": NaN}',
    b"\xff\xfe\xfd",
    b'{"message":"\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes: not valid UTF-8
    b'{"message":"\\ud800"}',
    b'{"message":' + b'"' + b"x" * 1000 + b'"',  # truncated
    b'{"message":{"$ref":"#"}}',
    b'{"items":' + b"[" * 40 + b"]" * 40 + b"}",
    b'{"message":"hi","__proto__":{"admin":true}}',
    b'{"seconds":-1}',
    b'{"seconds":1e308,"steps":0}',
    b'{"start_date":"2026-02-30","end_date":"0000-00-00","format":"exe"}',
]
DEEP_JSON: list[bytes] = [
    b"[" * 50_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'{"message":' + b"[" * 3000 + b"]" * 3000 + b"}",
]


async def _invoke_events(stub: handler_pb2_grpc.HandlerStub, request: handler_pb2.InvokeRequest) -> list[str]:
    events = [e async for e in stub.Invoke(request, timeout=20)]  # type: ignore[attr-defined]
    kinds = [e.WhichOneof("event") or "?" for e in events]
    assert kinds, "Invoke ended without a single event"
    assert all(k == "progress" for k in kinds[:-1]), kinds
    assert kinds[-1] in ("result", "error"), kinds
    last = events[-1]
    if last.HasField("error"):
        assert last.error.code in protocol.ERROR_CODES, last.error
        return [*kinds[:-1], f"error:{last.error.code}"]
    return kinds


async def test_handler_hostile_payloads_get_documented_answers(
    handler_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_EXAMPLES_STEP_SECONDS", "0")  # the examples' pause between steps
    rng = random.Random(3)
    # Not `delay`: a payload without `seconds` waits its default 5 s, which proves nothing here.
    actions = ["echo", "echo_async", "validate_user", "generate_report", "process_data", "bulk_operation"]
    outcomes: collections.Counter[str] = collections.Counter()
    async with rpc.channel(handler_target) as channel:
        stub = handler_pb2_grpc.HandlerStub(channel)
        for payload in HOSTILE_JSON:
            for action in actions:
                request = handler_pb2.InvokeRequest(
                    request_id=rng.choice(["", "r-1", "x" * 5000, "\u0000"]),
                    action=action,
                    payload=payload,
                    metadata=rng.choice([b"", b"[]", b"\xff", b'{"priority":"high"}']),
                    principal=common_pb2.Principal(user_id=rng.choice(["", "u"]), tenant_id=""),
                    attempt=rng.choice([-5, 0, 1, 2**31 - 1]),
                )
                kinds = await _invoke_events(stub, request)
                outcomes[kinds[-1]] += 1
                answer = await stub.Validate(request, timeout=20)
                if not answer.valid:
                    assert answer.error.code in protocol.ERROR_CODES, answer
        # Unknown and absurd action names.
        for action in ["", "$cancel", "nope", "x" * 100_00, "../../etc/passwd", "\u202e"]:
            kinds = await _invoke_events(stub, handler_pb2.InvokeRequest(action=action, payload=b"{}"))
            assert kinds == ["error:INVALID_ACTION"], (action[:20], kinds)
    assert outcomes["error:VALIDATION_ERROR"] > 0 and outcomes["result"] > 0, outcomes
    await assert_serving(handler_target)


async def test_handler_deeply_nested_payload_is_validation_error(handler_target: str) -> None:
    """Regression: a payload nested deeper than Python's recursion limit must be refused as
    VALIDATION_ERROR, not crash the servicer (which grpc reports as UNKNOWN)."""
    async with rpc.channel(handler_target) as channel:
        stub = handler_pb2_grpc.HandlerStub(channel)
        for payload in DEEP_JSON:
            request = handler_pb2.InvokeRequest(request_id="deep", action="echo", payload=payload)
            try:
                kinds = await _invoke_events(stub, request)
                answer = await stub.Validate(request, timeout=20)
            except aio.AioRpcError as exc:
                pytest.fail(f"{payload[:12]!r}: gRPC {exc.code().name}: {(exc.details() or '')[:120]}")
            assert kinds == ["error:VALIDATION_ERROR"], kinds
            assert not answer.valid and answer.error.code == "VALIDATION_ERROR"
    await assert_serving(handler_target)


async def test_connections_hostile_messages(connect_gw: Gateway) -> None:
    async with rpc.channel(connect_gw.grpc_target) as channel:
        stub = connections_pb2_grpc.ConnectionsStub(channel)

        async def status_of(call: object) -> str:
            try:
                await call  # type: ignore[misc]
            except aio.AioRpcError as exc:
                return exc.code().name
            return "OK"

        for frame in [b"", b"\xff\xfe", b"\xed\xa0\x80"]:
            assert await status_of(
                stub.Send(connections_pb2.SendRequest(connection_id="c", frame=frame))
            ) == ("INVALID_ARGUMENT")
        for cid in ["", "nope", "x" * 10_000, "../", "\u0000"]:
            assert await status_of(
                stub.Send(connections_pb2.SendRequest(connection_id=cid, frame=b"{}"))
            ) == ("NOT_FOUND")
        for code in [-1, 1, 999, 1004, 1005, 1006, 1015, 2999, 5000, 2**31 - 1]:
            request = connections_pb2.DisconnectRequest(connection_id="nope", code=code, reason="r" * 500)
            assert await status_of(stub.Disconnect(request)) == "INVALID_ARGUMENT", code
        many = await stub.SendMany(
            connections_pb2.SendManyRequest(connection_ids=[f"c{i}" for i in range(2_000)], frame=b"{}"),
            timeout=10,
        )
        assert len(many.not_found) == 2_000 and not many.delivered
    await assert_serving(connect_gw.grpc_target)


async def test_oversize_messages_are_refused_and_servers_stay_up(
    handler_target: str, connect_gw: Gateway
) -> None:
    big = b'{"message":"' + b"x" * (CAP + 100) + b'"}'
    async with rpc.channel(handler_target, max_message_bytes=CAP * 4) as channel:
        stub = handler_pb2_grpc.HandlerStub(channel)
        with pytest.raises(aio.AioRpcError) as info:
            await stub.Validate(handler_pb2.InvokeRequest(action="echo", payload=big), timeout=10)
        assert info.value.code().name == "RESOURCE_EXHAUSTED"
        with pytest.raises(aio.AioRpcError) as info:
            _ = [
                e
                async for e in stub.Invoke(handler_pb2.InvokeRequest(action="echo", payload=big), timeout=10)
            ]
        assert info.value.code().name == "RESOURCE_EXHAUSTED"
        # Still serving, and a message just under the cap still works.
        ok = await stub.Validate(
            handler_pb2.InvokeRequest(action="echo", payload=b'{"message":"' + b"x" * (CAP - 200) + b'"}'),
            timeout=10,
        )
        assert ok.valid
    async with rpc.channel(connect_gw.grpc_target, max_message_bytes=CAP * 4) as channel:
        cstub = connections_pb2_grpc.ConnectionsStub(channel)
        with pytest.raises(aio.AioRpcError) as info:
            await cstub.SendMany(connections_pb2.SendManyRequest(connection_ids=["a"], frame=big), timeout=10)
        assert info.value.code().name == "RESOURCE_EXHAUSTED"
        with pytest.raises(aio.AioRpcError) as info:
            await cstub.SendMany(
                connections_pb2.SendManyRequest(connection_ids=["c" * 100] * (CAP // 100 + 10), frame=b"{}"),
                timeout=10,
            )
        assert info.value.code().name == "RESOURCE_EXHAUSTED"
    await assert_serving(handler_target)
    await assert_serving(connect_gw.grpc_target)


async def test_default_cap_is_the_configured_one() -> None:
    """Servers built from default settings refuse a message over 4 MiB (and take one under it)."""
    cap = load_settings({}).grpc_max_message_bytes
    assert cap == 4 * 1024 * 1024
    assert ("grpc.max_receive_message_length", cap) in rpc.server_options(max_message_bytes=cap)
    server = HandlerServer(actions=handlers(), name="default-cap", max_message_bytes=cap)
    port = await server.start(host="127.0.0.1", port=0)
    try:
        async with rpc.channel(f"127.0.0.1:{port}", max_message_bytes=cap * 2) as channel:
            stub = handler_pb2_grpc.HandlerStub(channel)
            over = json.dumps({"message": "x" * cap}).encode()
            with pytest.raises(aio.AioRpcError) as info:
                await stub.Validate(handler_pb2.InvokeRequest(action="echo", payload=over), timeout=20)
            assert info.value.code().name == "RESOURCE_EXHAUSTED"
            under = json.dumps({"message": "x" * 60_000}).encode()
            assert (
                await stub.Validate(handler_pb2.InvokeRequest(action="echo", payload=under), timeout=20)
            ).valid
    finally:
        await server.stop(grace=0.5)
