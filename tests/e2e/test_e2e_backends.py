"""Backends on the real stack (two connect pods), through the backend SDK and the CLI:
publish to a connection, a user and a tenant, and a request submitted on a user's
behalf reaching that user's sockets."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from e2e_helpers import Recorder, eventually, running_stack

from streamer.backend import AsyncBackend, Backend
from streamer.client import InvalidActionError, StreamerClient, ValidationError
from streamer.local.stack import LocalStack
from streamer.store import COMPLETED, Store, request_key

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


def backend(stack: LocalStack) -> AsyncBackend:
    return AsyncBackend(stack.service("router").grpc_address, settings=stack.settings, timeout=30)


async def cli(stack: LocalStack, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, **stack.env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer.cli.main",
        *args,
        "--router",
        str(stack.service("router").grpc_address),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _connections(store: Store, tenant: str, count: int) -> list[Any]:
    found = await store.connections.by_tenant(tenant)
    return found if len(found) == count else []


async def test_publish_to_a_connection_a_user_and_a_tenant_across_two_pods(stack2: LocalStack) -> None:
    tenant, alice = rid("t"), rid("alice")
    a0, a1, bob, out = Recorder(), Recorder(), Recorder(), Recorder()
    async with (
        client(stack2, pod=0, user=alice, tenant=tenant, on_message=a0),
        client(stack2, pod=1, user=alice, tenant=tenant, on_message=a1),
        client(stack2, pod=1, user=rid("bob"), tenant=tenant, on_message=bob),
        # Another tenant whose id extends ours, on the other pod: never reached.
        client(stack2, pod=1, user=alice, tenant=f"{tenant}#{alice}", on_message=out) as outsider,
        backend(stack2) as b,
    ):
        async with Store.open(settings=stack2.settings) as store:
            # every socket is registered (connect may write its record after the upgrade)
            conns = await eventually(lambda: _connections(store, tenant, 3))
        (bob_conn,) = [c.connection_id for c in conns if c.user_id != alice]

        def got(rec: Recorder, marker: str) -> list[dict[str, Any]]:
            return [m for m in rec.messages if m.get("marker") == marker]

        sent = await b.publish({"type": "notice", "marker": "user"}, to_user=alice, tenant=tenant)
        assert (sent.matched, sent.delivered, sent.failed) == (2, 2, 0)
        await eventually(lambda: got(a0, "user") and got(a1, "user"))
        assert not got(bob, "user")

        sent = await b.publish({"marker": "tenant"}, to_tenant=tenant)
        assert (sent.matched, sent.delivered) == (3, 3)
        await eventually(lambda: got(a0, "tenant") and got(a1, "tenant") and got(bob, "tenant"))
        assert got(bob, "tenant")[0]["type"] == "message"  # a message without type gets one

        sent = await b.publish({"type": "notice", "marker": "one"}, to_connection=bob_conn)
        assert (sent.matched, sent.delivered) == (1, 1)
        await eventually(lambda: got(bob, "one"))
        assert not got(a0, "one") and not got(a1, "one")
        assert outsider.connected
        assert not [m for m in out.messages if m.get("marker")]  # none of it reached the outsider

    # The CLI: counts with --json, exit 0; a connection that does not exist is 15.
    code, out, _ = await cli(stack2, "publish", '{"text": "hi"}', "--tenant", tenant, "--json")
    assert code == 0 and json.loads(out) == {"matched": 0, "delivered": 0, "failed": 0}
    code, _, err = await cli(stack2, "publish", "{}", "--connection", "no-such-connection")
    assert code == 15 and "NOT_FOUND" in err


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
        backend(stack2) as b,
    ):
        job = await b.submit(
            "echo_async", {"message": "for you"}, user=user, tenant=tenant, request_id=request_id
        )
        assert (job.request_id, job.status, job.connections) == (request_id, "PENDING", 2)
        for rec in (first, second):
            await eventually(lambda rec=rec: rec.of(request_id, "complete"), timeout=60)
            kinds = [m["type"] for m in rec.of(request_id)]
            assert kinds[0] == "acknowledgment"
            assert "progress" in kinds
            assert rec.of(request_id, "complete")[-1]["result"]["message"] == "for you"
        assert stranger.of(request_id) == []
        # Re-submitting the id is idempotent: its state, no second request.
        again = await b.submit(
            "echo_async", {"message": "for you"}, user=user, tenant=tenant, request_id=request_id
        )
        assert again.status == COMPLETED and again.frame["type"] == "complete"
    # A socket opened later finds it with $resume and $status.
    late_frames = Recorder()
    async with client(stack2, pod=0, user=user, tenant=tenant, on_message=late_frames) as late:
        await late.resume()
        resumed = await eventually(lambda: [m for m in late_frames.of(request_id) if m.get("resumed")])
        assert resumed[0]["status"] == COMPLETED
        status = await late.status(request_id)
        assert status["status"] == COMPLETED
    async with Store.open(settings=stack2.settings) as store:
        record = await store.requests.require(request_key(tenant, request_id))
    assert record.connection_id == "" and record.user_id == user


async def test_submit_refusals_are_typed_errors_and_exit_statuses(stack2: LocalStack) -> None:
    router = stack2.service("router").grpc_address
    with Backend(router, settings=stack2.settings, timeout=30) as b:  # the synchronous client
        for action in ("echo", "$status", "no_such_action"):  # sync, system, unknown
            with pytest.raises(InvalidActionError):
                b.submit(action, {}, user="u", tenant="t")
        with pytest.raises(ValidationError) as err:
            b.submit("generate_report", {"start_date": "x"}, user="u", tenant="t")
        assert err.value.details
    code, out, _ = await cli(
        stack2,
        "submit",
        "generate_report",
        "--payload",
        '{"start_date": "x"}',
        "--user",
        "u",
        "--tenant",
        "t",
    )
    assert code == 10
    code, out, _ = await cli(
        stack2, "submit", "echo_async", "--payload", '{"message": "cli"}', "--id", rid("cli"), "--json"
    )
    assert code == 0 and json.loads(out)["status"] == "PENDING"


async def test_the_example_billing_backend(stack2: LocalStack) -> None:
    user, tenant = rid("u"), rid("t")
    frames = Recorder()
    async with client(stack2, pod=1, user=user, tenant=tenant, on_message=frames):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "examples.backends.billing",
            "--user",
            user,
            "--tenant",
            tenant,
            "--router",
            str(stack2.service("router").grpc_address),
            env={**os.environ, **stack2.env},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 0
        (line,) = out.decode().splitlines()
        billed = json.loads(line)
        assert billed["notified"] == 1 and billed["watching"] == 1 and billed["status"] == "PENDING"
        request_id = billed["request_id"]
        assert [m for m in frames.messages if m.get("type") == "invoice_ready"]
        await eventually(lambda: frames.of(request_id, "complete"), timeout=90)
        assert frames.of(request_id)[0]["type"] == "acknowledgment"
        assert frames.of(request_id, "complete")[0]["result"]


def _describe_router(address: str) -> dict[str, tuple[str, str]]:
    """What grpcurl sees: the Router's methods and their types, through server reflection only."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        assert "streamer.v1.Router" in list(db.get_services())
        service = DescriptorPool(db).FindServiceByName("streamer.v1.Router")
        return {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}


async def test_reflection_describes_publish_and_submit(stack2: LocalStack) -> None:
    methods = await asyncio.to_thread(_describe_router, str(stack2.service("router").grpc_address))
    assert methods["Publish"] == ("streamer.v1.PublishRequest", "streamer.v1.PublishResponse")
    assert methods["Submit"] == ("streamer.v1.SubmitRequest", "streamer.v1.SubmitResponse")
