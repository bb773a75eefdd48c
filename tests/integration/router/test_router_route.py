"""Route over real gRPC: every branch, against SDK handler servers and DynamoDB Local."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from metricslib import scrape
from router_helpers import ActionsUnderTest, Route, route_request

from streamer.store import FAILED, PENDING, Store, request_key


def one(frames: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(frames) == 1, frames
    return frames[0]


def err(frames: list[dict[str, Any]]) -> dict[str, Any]:
    frame = one(frames)
    assert frame["type"] == "error", frame
    return frame


# --- lookup, permissions, schema ------------------------------------------------------


async def test_unknown_action_is_invalid_action(route: Route, ids: Callable[[str], str]) -> None:
    frame = err(await route("no_such_action", request_id="r-unknown", user=ids("u"), tenant=ids("t")))
    assert frame["error"]["code"] == "INVALID_ACTION"
    assert frame["request_id"] == "r-unknown"


async def test_missing_permission_is_forbidden(route: Route, ids: Callable[[str], str]) -> None:
    frame = err(await route("t_secret", user=ids("u"), tenant=ids("t"), permissions=("reports:read",)))
    assert frame["error"]["code"] == "FORBIDDEN"
    assert frame["error"]["details"] == {"missing_permissions": ["reports:export"]}
    ok = one(
        await route(
            "t_secret", user=ids("u"), tenant=ids("t"), permissions=("reports:read", "reports:export")
        )
    )
    assert ok["type"] == "response" and ok["data"] == {"secret": 42}


async def test_schema_failure_lists_paths_and_keeps_the_id(route: Route, ids: Callable[[str], str]) -> None:
    frame = err(await route("echo", request_id="r-bad", user=ids("u"), tenant=ids("t"), payload={}))
    assert frame["request_id"] == "r-bad"
    assert frame["error"]["code"] == "VALIDATION_ERROR"
    assert frame["error"]["details"] == [{"path": "message", "message": "'message' is a required property"}]
    assert frame["error"].get("retryable") in (None, False)

    frame = err(
        await route(
            "generate_report",
            user=ids("u"),
            tenant=ids("t"),
            payload={"start_date": "2024-13-01", "end_date": "2024-01-31", "format": "docx"},
        )
    )
    paths = {d["path"] for d in frame["error"]["details"]}
    assert paths == {"start_date", "format"}


async def test_schema_failure_stores_nothing(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    rid, tenant = ids("r"), ids("t")
    frame = err(
        await route("echo_async", request_id=rid, user=ids("u"), tenant=tenant, payload={"message": 5})
    )
    assert frame["error"]["details"][0]["path"] == "message"
    assert await router_store.requests.get(request_key(tenant, rid)) is None


async def test_handler_rule_beyond_schema_refuses_an_async_request(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    rid, tenant = ids("r"), ids("t")
    payload = {"start_date": "2024-02-01", "end_date": "2024-01-31", "format": "pdf", "report_type": "sales"}
    frame = err(await route("generate_report", request_id=rid, user=ids("u"), tenant=tenant, payload=payload))
    assert frame["error"]["code"] == "VALIDATION_ERROR"
    assert frame["error"]["details"] == [{"path": "end_date", "message": "must be on or after start_date"}]
    assert await router_store.requests.get(request_key(tenant, rid)) is None


async def test_malformed_route_request(router_stub: Any, ids: Callable[[str], str]) -> None:
    request = route_request("echo", request_id="r-x", user=ids("u"), tenant=ids("t"))
    request.payload = b"{not json"
    frame = json.loads((await router_stub.Route(request, timeout=5)).frames[0])
    assert frame["error"]["code"] == "VALIDATION_ERROR" and frame["request_id"] == "r-x"
    request = route_request("echo", request_id="r-y", user="", tenant=ids("t"), payload={"message": "m"})
    frame = json.loads((await router_stub.Route(request, timeout=5)).frames[0])
    assert frame["error"]["code"] == "UNAUTHORIZED"


# --- sync ---------------------------------------------------------------------------------


async def test_sync_echo_answers_response(route: Route, ids: Callable[[str], str]) -> None:
    frame = one(
        await route("echo", request_id="r-echo", user=ids("u"), tenant=ids("t"), payload={"message": "Hello"})
    )
    assert frame["type"] == "response" and frame["success"] is True
    assert frame["request_id"] == "r-echo"
    assert frame["data"]["message"] == "Hello"


@pytest.mark.parametrize(
    ("kind", "code", "retryable"),
    [
        ("validation", "VALIDATION_ERROR", False),
        ("retryable", "PROCESSING_FAILED", True),
        ("permanent", "PROCESSING_FAILED", False),
        ("crash", "PROCESSING_FAILED", False),
    ],
)
async def test_sync_handler_errors_become_error_frames(
    route: Route, ids: Callable[[str], str], kind: str, code: str, retryable: bool
) -> None:
    frame = err(await route("t_fail", user=ids("u"), tenant=ids("t"), payload={"kind": kind}))
    assert frame["error"]["code"] == code
    assert frame["error"]["retryable"] is retryable
    assert "secret internal detail" not in json.dumps(frame)


async def test_auto_at_threshold_stays_sync_and_over_goes_async(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    user, tenant = ids("u"), ids("t")
    at = one(await route("t_auto_5", request_id=ids("r"), user=user, tenant=tenant))
    assert at["type"] == "response" and at["data"] == {"sync": True}
    rid = ids("r")
    over = one(await route("t_auto_over", request_id=rid, user=user, tenant=tenant))
    assert over == {
        "type": "acknowledgment",
        "request_id": rid,
        "status": "queued",
        "message": over["message"],
    }
    record = await router_store.requests.get(request_key(tenant, rid))
    assert record is not None and record.status == PENDING


async def test_sync_deadline_is_timeout(
    route: Route, ids: Callable[[str], str], test_actions: ActionsUnderTest
) -> None:
    frame = err(await route("t_sleep", user=ids("u"), tenant=ids("t"), payload={"seconds": 5}))
    assert frame["error"]["code"] == "TIMEOUT"
    assert frame["error"]["retryable"] is True
    # the router's deadline ended the handler's work too
    await asyncio.wait_for(test_actions.sleepy.cancelled.wait(), 5)


async def test_handler_down_is_service_unavailable(route: Route, ids: Callable[[str], str]) -> None:
    frame = err(await route("gone_sync", user=ids("u"), tenant=ids("t")))
    assert frame["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert frame["error"]["retryable"] is True


async def test_async_is_queued_even_when_its_handler_is_down(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    rid, tenant = ids("r"), ids("t")
    frame = one(await route("gone_async", request_id=rid, user=ids("u"), tenant=tenant))
    assert frame["type"] == "acknowledgment"
    record = await router_store.requests.get(request_key(tenant, rid))
    assert record is not None and record.handler == "gone"


# --- async ----------------------------------------------------------------------------------


async def test_async_request_is_stored_pending(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    user, tenant, rid = ids("u"), ids("t"), ids("r")
    frame = one(
        await route(
            "echo_async",
            request_id=rid,
            user=user,
            tenant=tenant,
            connection="conn-a",
            payload={"message": "hi", "timestamp": 1700000000},
            metadata={"priority": 7, "trace": "x"},
        )
    )
    assert frame["type"] == "acknowledgment" and frame["request_id"] == rid and frame["status"] == "queued"
    record = await router_store.requests.get(request_key(tenant, rid))
    assert record is not None
    assert (record.status, record.action, record.handler) == (PENDING, "echo_async", "examples")
    assert (record.user_id, record.tenant_id, record.connection_id) == (user, tenant, "conn-a")
    assert record.payload == {"message": "hi", "timestamp": 1700000000}
    assert record.metadata == {"priority": 7, "trace": "x"}
    assert (record.priority, record.max_attempts, record.timeout, record.attempt) == (7, 3, 60.0, 1)


@pytest.mark.parametrize(
    ("metadata", "expected"), [({}, 5), ({"priority": 99}, 10), ({"priority": "high"}, 5)]
)
async def test_async_priority(
    route: Route, router_store: Store, ids: Callable[[str], str], metadata: dict[str, Any], expected: int
) -> None:
    rid, tenant = ids("r"), ids("t")
    payload = {"start_date": "2024-01-01", "end_date": "2024-01-31", "format": "pdf", "report_type": "sales"}
    frame = one(
        await route(
            "generate_report",
            request_id=rid,
            user=ids("u"),
            tenant=tenant,
            payload=payload,
            metadata=metadata,
        )
    )
    assert frame["type"] == "acknowledgment"
    record = await router_store.requests.get(request_key(tenant, rid))
    assert record is not None and record.priority == expected


async def test_demo_client_payloads_are_accepted(route: Route, ids: Callable[[str], str]) -> None:
    user, tenant = ids("u"), ids("t")
    cases = [
        ("echo", {"message": "Hello"}, "response"),
        ("validate_user", {"name": "Ann", "email": "ann@example.com"}, "response"),
        (
            "generate_report",
            {"start_date": "2024-01-01", "end_date": "2024-01-31", "format": "pdf", "report_type": "sales"},
            "acknowledgment",
        ),
        ("process_data", {"dataset_id": "ds-1", "operation": "aggregate"}, "acknowledgment"),
        ("delay", {"seconds": 1}, "acknowledgment"),
    ]
    for action, payload, expected in cases:
        frame = one(await route(action, user=user, tenant=tenant, payload=payload))
        assert frame["type"] == expected, (action, frame)


# --- idempotency ------------------------------------------------------------------------------


async def test_async_resend_answers_current_state_never_a_second_request(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    user, tenant, rid = ids("u"), ids("t"), ids("r")
    first = one(await route("echo_async", request_id=rid, user=user, tenant=tenant, payload={"message": "a"}))
    assert first["type"] == "acknowledgment"
    created = await router_store.requests.get(request_key(tenant, rid))
    again = one(
        await route(
            "echo_async",
            request_id=rid,
            user=user,
            tenant=tenant,
            connection="conn-new",
            payload={"message": "b"},
        )
    )
    assert again["type"] == "status" and again["status"] == PENDING and again["request_id"] == rid
    record = await router_store.requests.get(request_key(tenant, rid))
    assert record is not None and record.subscribed  # marked: it has a subscriber now
    # Otherwise untouched: same payload, same connection.
    assert dataclasses.replace(record, subscribed=False) == created
    subs = await router_store.subscriptions.for_request(request_key(tenant, rid))
    assert [s.connection_id for s in subs] == ["conn-new"]  # re-attached to where it was re-sent

    tok = (
        await router_store.requests.claim(request_key(tenant, rid), owner="w1", attempt=1, claim_seconds=30)
    ).claim_token
    await router_store.requests.complete(
        request_key(tenant, rid), owner="w1", attempt=1, token=tok, result={"message": "a"}
    )
    done = one(await route("echo_async", request_id=rid, user=user, tenant=tenant, payload={"message": "a"}))
    assert done["type"] == "complete" and done["result"] == {"message": "a"}


async def test_async_resend_of_a_failed_request_answers_its_error(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    user, tenant, rid = ids("u"), ids("t"), ids("r")
    one(await route("echo_async", request_id=rid, user=user, tenant=tenant, payload={"message": "a"}))
    tok = (
        await router_store.requests.claim(request_key(tenant, rid), owner="w1", attempt=1, claim_seconds=30)
    ).claim_token
    await router_store.requests.fail(
        request_key(tenant, rid),
        owner="w1",
        attempt=1,
        token=tok,
        error={"code": "PROCESSING_FAILED", "message": "no"},
    )
    frame = err(await route("echo_async", request_id=rid, user=user, tenant=tenant, payload={"message": "a"}))
    assert frame["error"] == {"code": "PROCESSING_FAILED", "message": "no", "retryable": False}
    record = await router_store.requests.get(request_key(tenant, rid))
    assert record is not None and record.status == FAILED


async def test_async_id_of_another_user_is_duplicate(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    tenant, rid = ids("t"), ids("r")
    one(await route("echo_async", request_id=rid, user="alice", tenant=tenant, payload={"message": "a"}))
    frame = err(
        await route("echo_async", request_id=rid, user="bob", tenant=tenant, payload={"message": "a"})
    )
    assert frame["error"]["code"] == "DUPLICATE_REQUEST" and frame["request_id"] == rid
    record = await router_store.requests.get(request_key(tenant, rid))
    assert record is not None and (record.user_id, record.tenant_id) == ("alice", tenant)


async def test_request_ids_are_scoped_per_tenant(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    """Issue #18 item 6: tenant B re-using tenant A's id got DUPLICATE_REQUEST (and learnt it existed)."""
    tenant_a, tenant_b, rid = ids("t"), ids("t"), ids("r")
    one(await route("echo_async", request_id=rid, user="alice", tenant=tenant_a, payload={"message": "a"}))
    for tenant, user in ((tenant_b, "alice"), (tenant_b + "#x", "bob")):
        frame = one(
            await route("echo_async", request_id=rid, user=user, tenant=tenant, payload={"message": "b"})
        )
        assert frame == {
            "type": "acknowledgment",
            "request_id": rid,
            "status": "queued",
            "message": frame["message"],
        }
        status = one(await route("$status", user=user, tenant=tenant, payload={"request_id": rid}))
        assert status["request_id"] == rid and status["status"] == PENDING
    a = await router_store.requests.get(request_key(tenant_a, rid))
    b = await router_store.requests.get(request_key(tenant_b, rid))
    assert a is not None and b is not None
    assert (a.tenant_id, a.payload, b.tenant_id, b.payload) == (
        tenant_a,
        {"message": "a"},
        tenant_b,
        {"message": "b"},
    )
    assert a.client_request_id == b.client_request_id == rid
    # the same holds for sync ids: each tenant's replay memory is its own
    first = one(
        await route("echo", request_id=rid + "-s", user="alice", tenant=tenant_a, payload={"message": "1"})
    )
    other = one(
        await route("echo", request_id=rid + "-s", user="alice", tenant=tenant_b, payload={"message": "2"})
    )
    assert (first["type"], other["type"]) == ("response", "response")
    assert first["data"] != other["data"]


async def test_sync_resend_replays_the_answer(
    route: Route, ids: Callable[[str], str], test_actions: ActionsUnderTest
) -> None:
    user, tenant, rid = ids("u"), ids("t"), ids("r")
    first = one(await route("t_count", request_id=rid, user=user, tenant=tenant))
    second = one(await route("t_count", request_id=rid, user=user, tenant=tenant))
    assert (
        first
        == second
        == {"type": "response", "request_id": rid, "success": True, "data": {"runs": 1, "user": user}}
    )
    assert test_actions.counter.runs[rid] == 1
    dup = err(await route("t_count", request_id=rid, user="someone-else", tenant=tenant))
    assert dup["error"]["code"] == "DUPLICATE_REQUEST"
    assert test_actions.counter.runs[rid] == 1


async def test_sync_resend_while_running_waits_for_the_same_answer(
    route: Route, ids: Callable[[str], str], test_actions: ActionsUnderTest
) -> None:
    user, tenant, rid = ids("u"), ids("t"), ids("r")
    test_actions.counter.gate = asyncio.Event()
    try:
        first = asyncio.create_task(route("t_count", request_id=rid, user=user, tenant=tenant))
        for _ in range(200):
            if test_actions.counter.runs.get(rid):
                break
            await asyncio.sleep(0.01)
        second = asyncio.create_task(route("t_count", request_id=rid, user=user, tenant=tenant))
        other = err(await route("t_count", request_id=rid, user="intruder", tenant=tenant))
        assert other["error"]["code"] == "DUPLICATE_REQUEST"
        await asyncio.sleep(0.05)
        test_actions.counter.gate.set()
        a, b = one(await first), one(await second)
    finally:
        test_actions.counter.gate = None
    assert a == b and a["data"]["runs"] == 1
    assert test_actions.counter.runs[rid] == 1


async def test_sync_retryable_failure_is_not_replayed(route: Route, ids: Callable[[str], str]) -> None:
    user, tenant, rid = ids("u"), ids("t"), ids("r")
    first = err(
        await route("t_fail", request_id=rid, user=user, tenant=tenant, payload={"kind": "retryable"})
    )
    assert first["error"]["retryable"] is True
    second = one(
        await route("t_fail", request_id=rid, user=user, tenant=tenant, payload={"kind": "permanent"})
    )
    assert second["error"]["message"] == "no such dataset"  # it ran again


async def test_route_metrics_and_health(router_service: Any, route: Route, ids: Callable[[str], str]) -> None:
    import aiohttp

    from streamer.api.v1 import router_pb2
    from streamer.metrics import REGISTRY

    before = (
        REGISTRY.get_sample_value(
            "streamer_router_requests_total", {"action": "echo", "mode": "sync", "outcome": "response"}
        )
        or 0.0
    )
    one(await route("echo", user=ids("u"), tenant=ids("t"), payload={"message": "m"}))
    after = REGISTRY.get_sample_value(
        "streamer_router_requests_total", {"action": "echo", "mode": "sync", "outcome": "response"}
    )
    assert after == before + 1
    unknown = REGISTRY.get_sample_value(
        "streamer_router_requests_total",
        {"action": "unknown", "mode": "unknown", "outcome": "INVALID_ACTION"},
    )
    assert unknown is not None  # client-chosen names never become label values
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{router_service.http_port}/readyz") as resp:
            assert resp.status == 200
        assert "streamer_router_request_duration_seconds" in await scrape(
            router_service.http_port, session=http
        )
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from streamer import rpc

    channel = rpc.channel(f"127.0.0.1:{router_service.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        name = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close(None)
