"""The handler SDK's gRPC server: Describe, Validate, Invoke (progress, errors, timeout, cancel)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import types
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from metricslib import scrape
from router_helpers import Chatty, Checked, Failing, Sleepy

from streamer import rpc
from streamer.api.v1 import common_pb2, handler_pb2, handler_pb2_grpc
from streamer.metrics import REGISTRY
from streamer.sdk import Action, HandlerServer, ProgressFn, Request
from streamer.sdk.server import PROGRESS_QUEUE_SIZE, SERVICE_NAME


class QuickTimeout(Action):
    name = "t_quick_timeout"
    mode = "async"
    timeout = 0.1

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        await progress(5, "starting")
        await asyncio.sleep(10)


class Who(Action):
    name = "t_who"

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return {
            "request_id": request.request_id,
            "user": request.user_id,
            "tenant": request.tenant_id,
            "permissions": list(request.permissions),
            "attempt": request.attempt,
            "connection": request.connection_id,
            "metadata": request.metadata,
        }


@pytest.fixture
async def sdk() -> AsyncIterator[tuple[Any, HandlerServer, Sleepy]]:
    sleepy = Sleepy()
    server = HandlerServer(
        actions=[Failing(), Chatty(), Checked(), QuickTimeout(), Who(), sleepy], name="sdk-test"
    )
    port = await server.start(host="127.0.0.1", port=0, http_port=0)
    channel = rpc.channel(f"127.0.0.1:{port}")
    yield handler_pb2_grpc.HandlerStub(channel), server, sleepy
    await channel.close(None)
    await server.stop(grace=0)


def invoke_request(action: str, payload: Any = None, **kw: Any) -> handler_pb2.InvokeRequest:
    return handler_pb2.InvokeRequest(
        request_id=kw.pop("request_id", "r-1"),
        action=action,
        payload=json.dumps(payload if payload is not None else {}).encode(),
        **kw,
    )


async def events(stub: Any, request: handler_pb2.InvokeRequest) -> list[handler_pb2.InvokeEvent]:
    return [event async for event in stub.Invoke(request, timeout=10)]


def final_error(evts: list[handler_pb2.InvokeEvent]) -> common_pb2.Error:
    assert evts[-1].WhichOneof("event") == "error", evts
    assert all(e.WhichOneof("event") == "progress" for e in evts[:-1])
    return evts[-1].error


async def test_describe_reports_every_action(sdk: Any) -> None:
    stub, _, _ = sdk
    answer = await stub.Describe(handler_pb2.DescribeRequest(), timeout=5)
    assert answer.handler == "sdk-test"
    by_name = {a.name: a for a in answer.actions}
    assert set(by_name) == {"t_fail", "t_chatty", "t_checked", "t_quick_timeout", "t_who", "t_sleep"}
    checked = by_name["t_checked"]
    assert (checked.mode, checked.timeout_seconds, checked.max_attempts) == ("sync", 30.0, 3)
    assert json.loads(checked.payload_schema)["required"] == ["low", "high"]
    assert by_name["t_quick_timeout"].mode == "async"
    assert by_name["t_fail"].payload_schema == b""


async def test_validate_schema_then_rules(sdk: Any) -> None:
    stub, _, _ = sdk
    ok = await stub.Validate(invoke_request("t_checked", {"low": 1, "high": 2}), timeout=5)
    assert ok.valid and not ok.HasField("error")
    bad = await stub.Validate(invoke_request("t_checked", {"low": "x"}), timeout=5)
    assert not bad.valid and bad.error.code == "VALIDATION_ERROR"
    assert json.loads(bad.error.details) == [
        {"path": "high", "message": "'high' is a required property"},
        {"path": "low", "message": "'x' is not of type 'integer'"},
    ]
    rule = await stub.Validate(invoke_request("t_checked", {"low": 5, "high": 2}), timeout=5)
    assert not rule.valid and json.loads(rule.error.details) == [
        {"path": "high", "message": "must be >= low"}
    ]
    unknown = await stub.Validate(invoke_request("nope"), timeout=5)
    assert not unknown.valid and unknown.error.code == "INVALID_ACTION"


async def test_invoke_validates_before_running(sdk: Any) -> None:
    stub, _, _ = sdk
    error = final_error(await events(stub, invoke_request("t_checked", {"low": 5, "high": 2})))
    assert error.code == "VALIDATION_ERROR" and not error.retryable
    evts = await events(stub, invoke_request("t_checked", {"low": 2, "high": 5}))
    assert [e.WhichOneof("event") for e in evts] == ["result"]
    assert json.loads(evts[0].result.data) == {"span": 3}


async def test_invoke_passes_the_request_through(sdk: Any) -> None:
    stub, _, _ = sdk
    request = invoke_request(
        "t_who",
        request_id="r-who",
        metadata=b'{"priority":3}',
        principal=common_pb2.Principal(user_id="u", tenant_id="t", permissions=["a", "b"]),
        attempt=2,
        connection_id="c-9",
    )
    evts = await events(stub, request)
    assert json.loads(evts[-1].result.data) == {
        "request_id": "r-who",
        "user": "u",
        "tenant": "t",
        "permissions": ["a", "b"],
        "attempt": 2,
        "connection": "c-9",
        "metadata": {"priority": 3},
    }


async def test_progress_arrives_in_order_then_exactly_one_result(sdk: Any) -> None:
    stub, _, _ = sdk
    count = PROGRESS_QUEUE_SIZE * 2 + 7  # more than the queue holds: the action must wait, not drop
    evts = await events(stub, invoke_request("t_chatty", {"count": count}))
    kinds = [e.WhichOneof("event") for e in evts]
    assert kinds == ["progress"] * count + ["result"]
    assert [json.loads(e.progress.details)["i"] for e in evts[:-1]] == list(range(count))
    assert [e.progress.message for e in evts[:3]] == ["step 0", "step 1", "step 2"]
    assert json.loads(evts[-1].result.data) == {"count": count}


@pytest.mark.parametrize(
    ("kind", "code", "retryable", "message"),
    [
        ("validation", "VALIDATION_ERROR", False, "bad input"),
        ("retryable", "PROCESSING_FAILED", True, "database busy"),
        ("permanent", "PROCESSING_FAILED", False, "no such dataset"),
        ("crash", "PROCESSING_FAILED", False, "Action 't_fail' failed with an internal error"),
        ("timeout_inside", "PROCESSING_FAILED", False, "Action 't_fail' failed with an internal error"),
        ("not_json", "PROCESSING_FAILED", False, "Action 't_fail' returned an invalid result"),
    ],
)
async def test_exceptions_map_to_errors(
    sdk: Any, kind: str, code: str, retryable: bool, message: str
) -> None:
    stub, _, _ = sdk
    evts = await events(stub, invoke_request("t_fail", {"kind": kind}))
    assert evts[0].progress.message == "about to fail"
    error = final_error(evts)
    assert (error.code, error.retryable, error.message) == (code, retryable, message)
    if kind == "validation":
        assert json.loads(error.details) == [{"path": "kind", "message": "nope"}]


async def test_action_timeout_is_a_retryable_timeout(sdk: Any) -> None:
    stub, _, _ = sdk
    before = (
        REGISTRY.get_sample_value(
            "streamer_handler_invocations_total", {"action": "t_quick_timeout", "outcome": "timeout"}
        )
        or 0.0
    )
    evts = await events(stub, invoke_request("t_quick_timeout"))
    assert evts[0].progress.message == "starting"
    error = final_error(evts)
    assert (error.code, error.retryable) == ("TIMEOUT", True)
    after = REGISTRY.get_sample_value(
        "streamer_handler_invocations_total", {"action": "t_quick_timeout", "outcome": "timeout"}
    )
    assert after == before + 1


async def test_cancelling_the_call_cancels_the_work(sdk: Any) -> None:
    stub, _, sleepy = sdk
    call = stub.Invoke(invoke_request("t_sleep", {"seconds": 30}), timeout=30)
    reader = asyncio.ensure_future(call.read())
    await asyncio.wait_for(sleepy.started.wait(), 5)
    call.cancel()
    await asyncio.wait_for(sleepy.cancelled.wait(), 5)
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_a_caller_deadline_cancels_the_work(sdk: Any) -> None:
    stub, _, sleepy = sdk
    with pytest.raises(aio.AioRpcError) as info:
        async for _ in stub.Invoke(invoke_request("t_sleep", {"seconds": 30}), timeout=0.3):
            pass
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(sleepy.cancelled.wait(), 5)


async def test_unknown_action_and_bad_json(sdk: Any) -> None:
    stub, _, _ = sdk
    assert final_error(await events(stub, invoke_request("missing"))).code == "INVALID_ACTION"
    bad = handler_pb2.InvokeRequest(request_id="r", action="t_who", payload=b"[1,2]")
    assert final_error(await events(stub, bad)).code == "VALIDATION_ERROR"


async def test_health_metrics_and_graceful_stop(sdk: Any) -> None:
    stub, server, _ = sdk
    channel = rpc.channel(f"127.0.0.1:{server.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        await events(stub, invoke_request("t_who"))
        async with aiohttp.ClientSession() as http:
            metrics = await scrape(server.http_port, session=http)
            assert metrics.value("streamer_handler_invocations_total", action="t_who", outcome="ok")
            assert "streamer_handler_duration_seconds_bucket" in metrics
            async with http.get(f"http://127.0.0.1:{server.http_port}/readyz") as resp:
                assert resp.status == 200
        # a call in flight during stop() finishes within the grace period
        running = asyncio.ensure_future(events(stub, invoke_request("t_sleep", {"seconds": 0.2})))
        await asyncio.sleep(0.05)
        await server.stop(grace=5)
        evts = await running
        assert json.loads(evts[-1].result.data) == {"slept": True}
    finally:
        await channel.close(None)


def test_bad_declarations_are_refused() -> None:
    class NoName(Action):
        pass

    class BadMode(Action):
        name = "x"
        mode = "later"

    class BadSchema(Action):
        name = "y"
        schema = {"type": "no-such-type"}

    for action in (NoName(), BadMode(), BadSchema()):
        with pytest.raises(ValueError):
            HandlerServer(actions=[action])
    with pytest.raises(ValueError, match="twice"):
        HandlerServer(actions=[Who(), Who()])


async def test_draining_refuses_new_invokes_and_finishes_running_ones(sdk: Any) -> None:
    """What SIGTERM does to a handler pod (``serve()`` calls ``stop(grace=STREAMER_DRAIN_SECONDS)``,
    which the operator sets from the longest action timeout): health says NOT_SERVING, a new
    Invoke is refused, the one running finishes with its result."""
    stub, server, _ = sdk
    channel = rpc.channel(f"127.0.0.1:{server.port}")
    try:
        running = asyncio.ensure_future(events(stub, invoke_request("t_sleep", {"seconds": 1.0})))
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(server.stop(grace=30))
        await asyncio.sleep(0.2)
        assert not stopping.done()  # still waiting for the running call
        late = handler_pb2_grpc.HandlerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await events(late, invoke_request("t_who"))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        evts = await running
        assert json.loads(evts[-1].result.data) == {"slept": True}
        await asyncio.wait_for(stopping, 10)
    finally:
        await channel.close(None)


class Sized(Action):
    name = "t_sized"

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return {"data": "x" * int(request.payload["size"])}


async def test_a_result_over_the_message_limit_is_result_too_large_not_unavailable() -> None:
    # Found by hand: a 5 MB result failed the gRPC write (RESOURCE_EXHAUSTED), which callers
    # took for an unreachable handler: "unavailable; try again", and the processor ran it again.
    server = HandlerServer(actions=[Sized()], name="sized", max_message_bytes=64 * 1024)
    port = await server.start(host="127.0.0.1", port=0)
    channel = rpc.channel(f"127.0.0.1:{port}")
    try:
        stub = handler_pb2_grpc.HandlerStub(channel)
        fits = await events(stub, invoke_request("t_sized", {"size": 60 * 1024}))
        assert [e.WhichOneof("event") for e in fits] == ["result"]
        error = final_error(await events(stub, invoke_request("t_sized", {"size": 64 * 1024})))
        assert (error.code, error.retryable) == ("RESULT_TOO_LARGE", False)
        assert json.loads(error.details) == {"size": 64 * 1024 + 11, "limit": 63 * 1024}
    finally:
        await channel.close(None)
        await server.stop(grace=0)


async def test_the_complete_example_of_handlers_md_serves_as_written(tmp_path: pathlib.Path) -> None:
    # docs/handlers.md's shop/handlers.py, exactly as printed, served by the SDK and invoked.
    text = (pathlib.Path(__file__).parents[3] / "docs" / "handlers.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    assert example.startswith("# shop/handlers.py")
    module = types.ModuleType("shop_handlers_doc")
    exec(compile(example, "docs/handlers.md", "exec"), module.__dict__)
    server = HandlerServer(actions=module.handlers(), name="shop")
    port = await server.start(host="127.0.0.1", port=0)
    channel = rpc.channel(f"127.0.0.1:{port}")
    try:
        stub = handler_pb2_grpc.HandlerStub(channel)
        quote = await events(stub, invoke_request("quote", {"items": [{"sku": "a", "quantity": 2}]}))
        assert json.loads(quote[-1].result.data) == {"currency": "EUR", "total_cents": 500}
        export = await events(
            stub, invoke_request("export_orders", {"from": "2026-01-01", "to": "2026-01-31"})
        )
        assert [e.progress.percentage for e in export[:-1]] == [0, 40, 80, 100]
        assert json.loads(export[-1].result.data)["orders"] == 250
        backwards = final_error(
            await events(stub, invoke_request("export_orders", {"from": "2026-02-01", "to": "2026-01-31"}))
        )
        assert backwards.code == "VALIDATION_ERROR" and json.loads(backwards.details)[0]["path"] == "to"
    finally:
        await channel.close(None)
        await server.stop(grace=0)
