"""Backends on the real stack (two connect pods): publish to a connection, a user and a
tenant, and a request submitted on a user's behalf reaching that user's sockets."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from e2e_helpers import Recorder, eventually, running_stack

from streamer import rpc
from streamer.api.v1 import common_pb2, router_pb2, router_pb2_grpc
from streamer.client import StreamerClient
from streamer.local.stack import LocalStack
from streamer.store import COMPLETED, Store

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
async def stack2(dynamodb: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    async with running_stack(dynamodb, tmp_path_factory.mktemp("stack"), connects=2) as st:
        yield st


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def client(stack: LocalStack, *, pod: int = 0, user: str, tenant: str, **kw: Any) -> StreamerClient:
    kw.setdefault("reconnect_delay", 0.05)
    return StreamerClient(stack.ws_urls[pod], token=stack.token(user=user, tenant=tenant), **kw)


def router(stack: LocalStack) -> router_pb2_grpc.RouterStub:
    address = stack.service("router").grpc_address
    assert address
    return router_pb2_grpc.RouterStub(rpc.channel(address))


async def test_submitted_request_reaches_every_socket_of_the_user_and_resume_finds_it(
    stack2: LocalStack,
) -> None:
    user, tenant = rid("u"), rid("t")
    first, second, stranger = Recorder(), Recorder(), Recorder()
    request_id = rid("sub")
    async with (
        client(stack2, pod=0, user=user, tenant=tenant, on_message=first),
        client(stack2, pod=1, user=user, tenant=tenant, on_message=second),
        client(stack2, pod=1, user=rid("other"), tenant=tenant, on_message=stranger),
    ):
        answer = await router(stack2).Submit(
            router_pb2.SubmitRequest(
                principal=common_pb2.Principal(user_id=user, tenant_id=tenant),
                action="echo_async",
                request_id=request_id,
                payload=rpc.dumps({"message": "for you"}),
            ),
            timeout=30,
        )
        assert json.loads(answer.frame)["type"] == "acknowledgment"
        assert answer.request_id == request_id and answer.connections == 2
        for rec in (first, second):
            await eventually(lambda rec=rec: rec.of(request_id, "complete"), timeout=60)
            kinds = [m["type"] for m in rec.of(request_id)]
            assert kinds[0] == "acknowledgment"
            assert "progress" in kinds
            assert rec.of(request_id, "complete")[-1]["result"]["message"] == "for you"
        assert stranger.of(request_id) == []
        # Re-submitting the id is idempotent: its state, no second request.
        again = await router(stack2).Submit(
            router_pb2.SubmitRequest(
                principal=common_pb2.Principal(user_id=user, tenant_id=tenant),
                action="echo_async",
                request_id=request_id,
                payload=rpc.dumps({"message": "for you"}),
            ),
            timeout=30,
        )
        assert json.loads(again.frame)["type"] == "complete"
    # A socket opened later finds it with $resume and $status.
    late_frames = Recorder()
    async with client(stack2, pod=0, user=user, tenant=tenant, on_message=late_frames) as late:
        await late.resume()
        resumed = await eventually(lambda: [m for m in late_frames.of(request_id) if m.get("resumed")])
        assert resumed[0]["status"] == COMPLETED
        status = await late.status(request_id)
        assert status["status"] == COMPLETED
    async with Store.open(settings=stack2.settings) as store:
        record = await store.requests.require(request_id)
    assert record.connection_id == "" and record.user_id == user


async def test_submit_refusals_are_error_frames(stack2: LocalStack) -> None:
    stub = router(stack2)
    principal = common_pb2.Principal(user_id="u", tenant_id="t")
    cases = {
        "echo": "INVALID_ACTION",  # sync actions cannot be submitted
        "$status": "INVALID_ACTION",
        "no_such_action": "INVALID_ACTION",
    }
    for action, code in cases.items():
        out = await stub.Submit(router_pb2.SubmitRequest(principal=principal, action=action), timeout=30)
        assert json.loads(out.frame)["error"]["code"] == code, action
    bad = await stub.Submit(
        router_pb2.SubmitRequest(
            principal=principal, action="generate_report", payload=rpc.dumps({"start_date": "x"})
        ),
        timeout=30,
    )
    assert json.loads(bad.frame)["error"]["code"] == "VALIDATION_ERROR"
    assert bad.connections == 0
