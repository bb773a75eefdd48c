"""Internal callers are who they say, on the real stack: service tokens (mTLS off) and
certificate identities (mTLS on), against a caller policy."""

from __future__ import annotations

import json
import pathlib
import uuid

import grpc
import pytest
from e2e_helpers import Recorder, connect, eventually, running_stack
from metricslib import scrape
from pki import tls_env, write_pki

from streamer import callers, rpc
from streamer.api.v1 import common_pb2, router_pb2, router_pb2_grpc
from streamer.backend import AsyncBackend
from streamer.client import ForbiddenError, UnauthorizedError
from streamer.config import load_settings
from streamer.local.stack import LocalStack
from streamer.store import Store

pytestmark = pytest.mark.timeout(300)

SECRET = "service-token-secret-for-the-e2e-tests-0123456789"
POLICY = {
    "connect": {"rpcs": ["Route"]},
    "billing": {"rpcs": ["Publish", "Submit"], "tenants": ["acme"]},
}


async def refused(stack: LocalStack) -> dict[tuple[str, str, str], float]:
    """``streamer_router_calls_refused_total`` from the router's /metrics, by (caller, rpc, reason)."""
    metrics = await scrape(stack.service("router").http_port)
    return metrics.by("streamer_router_calls_refused_total", "caller", "rpc", "reason")


def forged_route(tenant: str) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        connection_id="c-forged",
        principal=common_pb2.Principal(user_id="victim", tenant_id=tenant),
        action="echo",
        request_id=f"forged-{uuid.uuid4().hex[:8]}",
        payload=rpc.dumps({"message": "as someone else"}),
    )


async def test_service_tokens_and_the_policy(dynamodb: str, tmp_path: pathlib.Path) -> None:
    env = {"STREAMER_SERVICE_TOKEN_SECRET": SECRET, "STREAMER_CALLER_POLICY": json.dumps(POLICY)}
    async with running_stack(dynamodb, tmp_path, env) as stack:
        router = stack.service("router").grpc_address
        assert router
        billing = load_settings(stack.env, service_name="billing")
        # connect signs its Route calls as "connect": clients work as before.
        frames = Recorder()
        async with connect(stack, user="alice", tenant="acme", on_message=frames) as alice:
            assert (await alice.request("echo", {"message": "hi"}, timeout=30))["message"] == "hi"
            async with AsyncBackend(router, settings=billing, timeout=30) as b:
                sent = await b.publish({"type": "bill"}, to_user="alice", tenant="acme")
                assert sent.delivered == 1
                job = await b.submit("echo_async", {"message": "m"}, user="alice", tenant="acme")
                await eventually(lambda: frames.of(job.request_id, "complete"), timeout=60)
                # ... but only for acme.
                with pytest.raises(ForbiddenError):
                    await b.publish({"type": "bill"}, to_tenant="globex")
                with pytest.raises(ForbiddenError):
                    await b.submit("echo_async", {"message": "m"}, user="bob", tenant="globex")
            async with Store.open(settings=stack.settings) as store:
                (mine,) = await store.connections.by_user("alice", tenant_id="acme")
        async with connect(stack, user="bob", tenant="globex"):
            async with Store.open(settings=stack.settings) as store:
                (theirs,) = await eventually(lambda: store.connections.by_user("bob", tenant_id="globex"))
            async with AsyncBackend(router, settings=billing, timeout=30) as b:
                with pytest.raises(ForbiddenError):  # a connection of another tenant
                    await b.publish({"type": "bill"}, to_connection=theirs.connection_id)
                assert (await b.publish({"type": "bill"}, to_connection=mine.connection_id)).matched == 0
            # billing cannot act as a user through Route: that principal is connect's to give.
            token = callers.signer(billing)
            assert token is not None
            channel = rpc.channel(router)
            try:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await router_pb2_grpc.RouterStub(channel).Route(
                        forged_route("acme"), timeout=30, metadata=token.metadata()
                    )
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            finally:
                await channel.close(None)
        # No token at all, or a token signed with another secret.
        async with AsyncBackend(router, settings=load_settings({}), timeout=30) as b:
            with pytest.raises(ForbiddenError):
                await b.publish({"type": "x"}, to_tenant="acme")
        forged = load_settings(
            {}, service_token_secret="another-secret-0123456789-0123456789", service_name="billing"
        )
        async with AsyncBackend(router, settings=forged, timeout=30) as b:
            with pytest.raises(UnauthorizedError):
                await b.submit("echo_async", {}, user="alice", tenant="acme")
        counts = await refused(stack)
        assert counts[("billing", "Publish", "not_allowed")] == 2
        assert counts[("billing", "Submit", "not_allowed")] == 1
        assert counts[("billing", "Route", "not_allowed")] == 1
        assert counts[("anonymous", "Publish", "not_allowed")] == 1
        assert counts[("anonymous", "Submit", "unauthenticated")] == 1


async def test_with_mtls_a_route_principal_is_taken_only_from_connect(
    dynamodb: str, tmp_path: pathlib.Path
) -> None:
    pki = write_pki(tmp_path, "streamer-services", "billing")
    policy = {"streamer-services": {"rpcs": ["Route"]}, "billing": {"rpcs": ["Publish"]}}
    env = {**tls_env(pki["streamer-services"]), "STREAMER_CALLER_POLICY": json.dumps(policy)}
    async with running_stack(dynamodb, tmp_path / "stack", env) as stack:
        router = stack.service("router").grpc_address
        assert router
        # connect's certificate names it: a client's request is routed as usual.
        async with connect(stack, user="alice", tenant="acme") as alice:
            assert (await alice.request("echo", {"message": "over mTLS"}, timeout=30))[
                "message"
            ] == "over mTLS"
            rpc.configure_tls(load_settings({}, **pki["billing"]))
            try:
                async with AsyncBackend(router, settings=load_settings({}), timeout=30) as b:
                    assert (await b.publish({"type": "bill"}, to_user="alice", tenant="acme")).delivered == 1
                    with pytest.raises(ForbiddenError):
                        await b.submit("echo_async", {}, user="alice", tenant="acme")
                channel = rpc.channel(router)
                try:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await router_pb2_grpc.RouterStub(channel).Route(forged_route("acme"), timeout=30)
                    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                finally:
                    await channel.close(None)
            finally:
                rpc.reset_tls()
        counts = await refused(stack)
        assert counts[("billing", "Route", "not_allowed")] == 1
        assert counts[("billing", "Submit", "not_allowed")] == 1
