"""Isolation on the real local stack: tenants, connections, gRPC caps, and what reaches the logs.

One :class:`~streamer.local.stack.LocalStack` for the module (every service its own
process), logging at DEBUG so the log scan at the end sees everything the services
can write. Alice and Bob are users of tenant A; Mallory is a user of tenant B.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator

import pytest
from grpc import aio
from seclib import Peer, assert_serving, fuzz_raw, hs256_with, methods_of

from streamer import protocol, rpc
from streamer.api.v1 import (
    common_pb2,
    connections_pb2,
    connections_pb2_grpc,
    handler_pb2,
    handler_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from streamer.local.stack import LocalStack
from streamer.store import COMPLETED, Store, request_key

ENV = {
    "STREAMER_SWEEP_INTERVAL_SECONDS": "0.5",
    "STREAMER_CLAIM_SECONDS": "3",
    "STREAMER_LEASE_SECONDS": "3",
    "STREAMER_PENDING_GRACE_SECONDS": "1",
    "STREAMER_PROGRESS_INTERVAL_SECONDS": "0",
    "STREAMER_EXAMPLES_STEP_SECONDS": "0.05",
    "STREAMER_WS_RATE_LIMIT": "0",
    "STREAMER_DRAIN_SECONDS": "1",
    "STREAMER_LOG_LEVEL": "DEBUG",
}
#: Placed in payloads, metadata and ids; must never show up in a log line.
MARKER = f"SECRET-PAYLOAD-{uuid.uuid4().hex}"
TOKENS: list[str] = []


@pytest.fixture(scope="module")
async def stack(dynamodb: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    st = LocalStack(
        dynamodb_endpoint=dynamodb,
        table_prefix=f"iso{uuid.uuid4().hex[:8]}",
        env=ENV,
        run_dir=tmp_path_factory.mktemp("isolation"),
        ready_timeout=90,
    )
    await st.start()
    try:
        yield st
    finally:
        await st.stop()


def token(stack: LocalStack, user: str, tenant: str) -> str:
    value = stack.token(user=user, tenant=tenant)
    TOKENS.append(value)
    return value


def is_error(code: str, rid: str | None = None) -> object:
    return lambda f: (
        f.get("type") == "error"
        and f["error"]["code"] == code
        and (rid is None or f.get("request_id") == rid)
    )


async def test_another_tenant_cannot_see_cancel_subscribe_or_resume(stack: LocalStack) -> None:
    alice = await Peer.open(stack.ws_url, token(stack, "alice", "tenant-a"))
    bob = await Peer.open(stack.ws_url, token(stack, "bob", "tenant-a"))
    mallory = await Peer.open(stack.ws_url, token(stack, "mallory", "tenant-b"))
    try:
        rid = f"iso-{uuid.uuid4().hex[:10]}"
        await alice.send(
            {"action": "delay", "id": rid, "payload": {"seconds": 2, "steps": 8}, "metadata": {"m": MARKER}}
        )
        await alice.wait_for(lambda f: f.get("type") == "acknowledgment" and f["request_id"] == rid)

        for action in ("$status", "$cancel", "$subscribe", "$unsubscribe"):
            call_id = f"m-{uuid.uuid4().hex[:8]}"
            await mallory.send({"action": action, "id": call_id, "payload": {"request_id": rid}})
            answer = await mallory.wait_for(lambda f, c=call_id: f.get("request_id") in (rid, c))
            assert answer["type"] == "error" and answer["error"]["code"] == "NOT_FOUND", (action, answer)
            # Exactly what an id that never existed gets: nothing tells Mallory it exists.
            ghost = f"ghost-{uuid.uuid4().hex[:8]}"
            await mallory.send({"action": action, "payload": {"request_id": ghost}})
            other = await mallory.wait_for(lambda f, g=ghost: f.get("request_id") == g)
            assert other["error"]["message"].replace(ghost, "X") == answer["error"]["message"].replace(
                rid, "X"
            )

        # Alice's id, sent by Mallory as a new request: ids are scoped per tenant, so it is
        # Mallory's own request (no DUPLICATE_REQUEST telling her Alice's exists), never
        # attached to Alice's, and it finishes with Mallory's payload (issue #18 item 6).
        await mallory.send({"action": "echo_async", "id": rid, "payload": {"message": "hijack"}})
        await mallory.wait_for(lambda f: f.get("type") == "acknowledgment" and f["request_id"] == rid)
        mine = await mallory.wait_for(
            lambda f: f.get("type") == "complete" and f["request_id"] == rid, timeout=60
        )
        assert "hijack" in json.dumps(mine) and MARKER not in json.dumps(mine)

        await mallory.send({"action": "$resume", "id": f"r-{uuid.uuid4().hex[:8]}"})
        # Bob shares Alice's tenant but not her requests: $resume is per user.
        await bob.send({"action": "$resume", "id": f"r-{uuid.uuid4().hex[:8]}"})
        await bob.send({"action": "$status", "id": "bob-status", "payload": {"request_id": rid}})
        same_tenant = await bob.wait_for(lambda f: f.get("request_id") == rid and f.get("type") == "status")
        assert same_tenant["status"] in ("PENDING", "PROCESSING")  # the same tenant may look

        done = await alice.wait_for(
            lambda f: f.get("type") == "complete" and f["request_id"] == rid, timeout=60
        )
        assert done["result"] == {"seconds": 2, "steps": 8}  # Mallory's $cancel changed nothing
        await mallory.send({"action": "$ping"})
        await mallory.wait_for(lambda f: f.get("type") == "pong")
        # Everything Mallory heard about the id is about her own request, never Alice's.
        assert not [f for f in mallory.about(rid) if MARKER in json.dumps(f) or "steps" in json.dumps(f)]
        assert not [f for f in mallory.about(rid) if f.get("type") == "status" and f.get("action") == "delay"]
        assert all(f.get("action") == "echo_async" for f in mallory.frames if f.get("resumed"))
        assert not [f for f in bob.frames if f.get("resumed") and f.get("request_id") == rid]
        assert not [f for f in bob.about(rid) if f.get("type") in ("progress", "complete")]
    finally:
        for peer in (alice, bob, mallory):
            await peer.close()


async def test_a_client_cannot_reach_another_connection(stack: LocalStack) -> None:
    alice = await Peer.open(stack.ws_url, token(stack, "alice", "tenant-a"))
    mallory = await Peer.open(stack.ws_url, token(stack, "mallory", "tenant-b"))
    try:
        async with Store.open(settings=stack.settings) as store:
            alice_conn = (await store.connections.by_user("alice", tenant_id="tenant-a"))[0].connection_id
            mallory_conn = (await store.connections.by_user("mallory", tenant_id="tenant-b"))[0].connection_id
            rid = f"spoof-{uuid.uuid4().hex[:10]}"
            spoof = {"connection_id": alice_conn, "tenant_id": "tenant-a", "user_id": "alice"}
            await mallory.send(
                {
                    "action": "echo_async",
                    "id": rid,
                    "payload": {"message": MARKER, **spoof},
                    "metadata": spoof,
                    # Fields a client has no business sending; the gateway must ignore them.
                    "principal": {"user_id": "alice", "tenant_id": "tenant-a"},
                    "connection_id": alice_conn,
                    "tenant_id": "tenant-a",
                }
            )
            await mallory.wait_for(
                lambda f: f.get("type") == "complete" and f["request_id"] == rid, timeout=60
            )
            await mallory.send(
                {"action": "$subscribe", "payload": {"request_id": rid, "connection_id": alice_conn}}
            )
            await mallory.wait_for(lambda f: f.get("type") == "status" and f["request_id"] == rid)
            record = await store.requests.get(request_key("tenant-b", rid))
            assert record is not None and record.status == COMPLETED
            assert (record.tenant_id, record.user_id, record.connection_id) == (
                "tenant-b",
                "mallory",
                mallory_conn,
            )
            assert not await store.subscriptions.for_connection(alice_conn)
        await alice.send({"action": "$ping"})
        await alice.wait_for(lambda f: f.get("type") == "pong")
        assert not alice.about(rid), alice.about(rid)
        assert MARKER not in json.dumps(alice.frames)
    finally:
        await alice.close()
        await mallory.close()


async def test_grpc_servers_cap_message_size(stack: LocalStack) -> None:
    """Each service process refuses a message over the configured cap (4 MiB by default)."""
    cap = stack.settings.grpc_max_message_bytes
    big = b'{"message":"' + b"x" * (cap + 1024) + b'"}'
    principal = common_pb2.Principal(user_id="u", tenant_id="t")
    targets = {
        "router": stack.service("router").grpc_address,
        "handler": stack.service("handler").grpc_address,
        "connect": stack.service("connect").grpc_address,
    }
    for name, target in targets.items():
        assert target is not None
        async with rpc.channel(target, max_message_bytes=cap * 2) as channel:
            with pytest.raises(aio.AioRpcError) as info:
                if name == "router":
                    request = router_pb2.RouteRequest(
                        connection_id="c", principal=principal, action="echo", request_id="big", payload=big
                    )
                    await router_pb2_grpc.RouterStub(channel).Route(request, timeout=30)
                elif name == "handler":
                    await handler_pb2_grpc.HandlerStub(channel).Validate(
                        handler_pb2.InvokeRequest(action="echo", payload=big), timeout=30
                    )
                else:
                    await connections_pb2_grpc.ConnectionsStub(channel).Send(
                        connections_pb2.SendRequest(connection_id="c", frame=big), timeout=30
                    )
            assert info.value.code().name == "RESOURCE_EXHAUSTED", (name, info.value)
    # All still up.
    await stack.wait_ready(list(stack.services), timeout=10)


async def test_router_answers_hostile_route_requests_with_error_frames(stack: LocalStack) -> None:
    """The router never fails a Route with a gRPC error for what a client could send.

    (Connect validates frames first; this checks the router does not rely on that.)
    """
    address = stack.service("router").grpc_address
    assert address is not None
    principal = common_pb2.Principal(user_id="fuzz", tenant_id="tenant-f", permissions=["x"])
    payloads = [
        b"",
        b"[]",
        b"null",
        b"\xff\xfe",
        b'{"message":"\\ud800"}',
        b"[" * 50_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b'{"message":' + b"[" * 3_000 + b"]" * 3_000 + b"}",
        b'{"message":1e999999}',
    ]
    problems: list[str] = []
    async with rpc.channel(address) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        for action in ("echo", "echo_async", "nope", "$status", "$cancel", "$resume", "$subscribe", ""):
            for payload in payloads:
                for metadata in (b"", b"[1]", b"\xff"):
                    request = router_pb2.RouteRequest(
                        connection_id="c-fuzz",
                        principal=principal,
                        action=action,
                        request_id=f"rf-{uuid.uuid4().hex[:8]}",
                        payload=payload,
                        metadata=metadata,
                    )
                    try:
                        answer = await stub.Route(request, timeout=30)
                    except aio.AioRpcError as exc:
                        detail = (exc.details() or "")[:100]
                        problems.append(f"{action} {payload[:12]!r} {metadata!r}: {exc.code().name} {detail}")
                        continue
                    for frame in answer.frames:
                        msg = json.loads(frame)
                        if msg.get("type") == "error":
                            assert msg["error"]["code"] in protocol.ERROR_CODES, msg
        # Publish (internal backends): a bad message is INVALID_ARGUMENT, never a crash.
        for payload in payloads:
            for to in (
                router_pb2.PublishTarget(connection_id="nope"),
                router_pb2.PublishTarget(user_id="u"),
                router_pb2.PublishTarget(tenant_id="t"),
                router_pb2.PublishTarget(),
            ):
                try:
                    await stub.Publish(router_pb2.PublishRequest(target=to, message=payload), timeout=30)
                except aio.AioRpcError as exc:
                    if exc.code().name not in ("INVALID_ARGUMENT", "NOT_FOUND"):
                        problems.append(
                            f"Publish {payload[:12]!r}: {exc.code().name} {(exc.details() or '')[:100]}"
                        )
    assert not problems, f"{len(problems)} call(s) failed with an undocumented gRPC error:\n" + "\n".join(
        problems[:10]
    )
    await stack.wait_ready(["router"], timeout=10)


async def test_router_survives_random_bytes(stack: LocalStack) -> None:
    address = stack.service("router").grpc_address
    assert address is not None
    seen = await fuzz_raw(address, methods_of(router_pb2.DESCRIPTOR, router_pb2), per_method=150, seed=3)
    assert seen["OK"] > 0, seen
    await assert_serving(address)


async def test_tokens_and_payloads_never_reach_the_logs(stack: LocalStack) -> None:
    """Runs last: drives every path once more with the marker, then scans every service log."""
    peer = await Peer.open(stack.ws_url, token(stack, "logger", "tenant-l"))
    try:
        frames = [
            {"action": "echo", "id": "log-1", "payload": {"message": MARKER}, "metadata": {"note": MARKER}},
            {"action": "echo_async", "id": "log-2", "payload": {"message": MARKER}},
            {"action": "validate_user", "id": "log-3", "payload": {"name": MARKER, "email": MARKER}},
            {"action": "generate_report", "id": "log-4", "payload": {"start_date": MARKER}},
            {"action": "no-such-action", "id": "log-5", "payload": {"message": MARKER}},
            {"action": "$status", "payload": {"request_id": MARKER[:100]}},
            {"action": "echo", "id": "log-6", "payload": {"message": MARKER + "x" * 200_000}},
            f'{{"action":"echo","payload":{{"message":"{MARKER}"',  # truncated
            {"action": "echo_async", "id": "log-2", "payload": {"message": MARKER}},  # re-sent
        ]
        for frame in frames:
            await peer.send(frame)
        await peer.wait_for(lambda f: f.get("type") == "complete" and f["request_id"] == "log-2", timeout=60)
        await peer.send({"action": "$cancel", "payload": {"request_id": "log-2"}})
        await peer.wait_for(lambda f: f.get("type") == "status" and f.get("request_id") == "log-2")
    finally:
        await peer.close()
    # Refused upgrades: a forged token carrying the marker, and a valid one in the query string.
    forged = hs256_with(b"not-the-secret", {"sub": MARKER, "tenant_id": "t", "exp": 9_999_999_999})
    TOKENS.append(forged)
    import aiohttp

    async with aiohttp.ClientSession() as session:
        url = stack.ws_url.replace("ws://", "http://")
        for headers, params in (
            ({"Authorization": f"Bearer {forged}"}, {}),
            ({}, {"token": forged}),
            ({"Sec-WebSocket-Protocol": f"streamer.v1, {forged}"}, {}),
        ):
            async with session.get(url, headers=headers, params=params) as resp:
                assert resp.status == 401
        async with session.ws_connect(stack.ws_url, params={"token": token(stack, "q", "tenant-l")}) as ws:
            await ws.send_str('{"action":"$ping"}')
            await ws.receive(timeout=10)

    await stack.stop()  # flush and close every log (the fixture's stop is then a no-op)
    logs = {
        name: service.log_path.read_text(errors="replace")
        for name, service in stack.services.items()
        if service.log_path is not None and service.log_path.exists()
    }
    assert sum(len(text) for text in logs.values()) > 1000, "the services wrote (almost) no logs"
    leaks: list[str] = []
    for name, text in logs.items():
        if MARKER in text:
            line = next(line for line in text.splitlines() if MARKER in line)
            leaks.append(f"{name}: payload marker in {line[:300]}")
        for value in TOKENS:
            for part in [value, *[p for p in value.split(".")[1:] if len(p) > 16]]:
                if part in text:
                    line = next(line for line in text.splitlines() if part in line)
                    leaks.append(f"{name}: token in {line[:300]}")
                    break
        if re.search(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ", text):
            leaks.append(f"{name}: something shaped like a JWT")
    assert not leaks, "\n".join(leaks[:10])
