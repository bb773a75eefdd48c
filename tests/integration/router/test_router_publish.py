"""Publish through the router to a connection, a user and a tenant.

Two small in-test ``Connections`` servers stand in for connect pods (connect is
another service); the router's real Delivery finds them through connection records
in DynamoDB Local (a connection) or through the connect pods directory (a user or a
tenant: one ``SendToAudience`` per pod, no record read).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc import aio

from streamer import rpc
from streamer.api.v1 import connections_pb2, connections_pb2_grpc, router_pb2
from streamer.store import ConnectionRecord, Store


class FakePod(connections_pb2_grpc.ConnectionsServicer):
    """Holds some connection ids and records every frame sent to them."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.who: dict[str, tuple[str, str]] = {}  # connection id -> (tenant, user)
        self.frames: dict[str, list[dict[str, Any]]] = {}

    async def SendToAudience(
        self, request: connections_pb2.SendToAudienceRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendToAudienceResponse:
        matched = [
            cid
            for cid in self.held
            if self.who[cid][0] == request.tenant_id and request.user_id in ("", self.who[cid][1])
        ]
        for cid in matched:
            self.frames.setdefault(cid, []).append(json.loads(request.frame))
        return connections_pb2.SendToAudienceResponse(matched=len(matched), delivered=len(matched))

    async def Send(
        self, request: connections_pb2.SendRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendResponse:
        if request.connection_id not in self.held:
            await context.abort(grpc.StatusCode.NOT_FOUND, "not here")
        self.frames.setdefault(request.connection_id, []).append(json.loads(request.frame))
        return connections_pb2.SendResponse(delivered=True)

    async def SendMany(
        self, request: connections_pb2.SendManyRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendManyResponse:
        delivered, missing = [], []
        for cid in request.connection_ids:
            if cid in self.held:
                self.frames.setdefault(cid, []).append(json.loads(request.frame))
                delivered.append(cid)
            else:
                missing.append(cid)
        return connections_pb2.SendManyResponse(delivered=delivered, not_found=missing)

    async def Disconnect(
        self, request: connections_pb2.DisconnectRequest, context: aio.ServicerContext
    ) -> connections_pb2.DisconnectResponse:
        return connections_pb2.DisconnectResponse(disconnected=request.connection_id in self.held)


@pytest.fixture
async def pods(router_store: Store) -> AsyncIterator[list[tuple[FakePod, str]]]:
    started = []
    for _ in range(2):
        pod = FakePod(set())
        server = rpc.create_server()
        connections_pb2_grpc.add_ConnectionsServicer_to_server(pod, server)
        port = rpc.bind(server, host="127.0.0.1", port=0)
        await server.start()
        started.append((pod, f"127.0.0.1:{port}", server))
        await router_store.pods.beat(f"127.0.0.1:{port}", duration=60)  # as connect does
    yield [(pod, endpoint) for pod, endpoint, _ in started]
    for _, endpoint, server in started:
        await router_store.pods.leave(endpoint)
        await server.stop(grace=None)


async def connect(
    store: Store, pod: tuple[FakePod, str], *, cid: str, user: str, tenant: str, held: bool = True
) -> None:
    if held:
        pod[0].held.add(cid)
        pod[0].who[cid] = (tenant, user)
    await store.connections.put(
        ConnectionRecord.new(connection_id=cid, user_id=user, tenant_id=tenant, endpoint=pod[1])
    )


def publish_request(message: Any, **target: str) -> router_pb2.PublishRequest:
    tenant = target.pop("tenant_id_for_user", "")
    return router_pb2.PublishRequest(
        target=router_pb2.PublishTarget(**target), tenant_id=tenant, message=json.dumps(message).encode()
    )


async def test_publish_to_connection_user_and_tenant(
    router_stub: Any, router_store: Store, pods: list[tuple[FakePod, str]], ids: Callable[[str], str]
) -> None:
    a, b = pods
    t1, t2 = ids("t"), ids("t")
    c1, c2, c3, c4, stale = ids("c1"), ids("c2"), ids("c3"), ids("c4"), ids("stale")
    await connect(router_store, a, cid=c1, user="u1", tenant=t1)
    await connect(router_store, b, cid=c2, user="u1", tenant=t1)
    await connect(router_store, a, cid=c3, user="u2", tenant=t1)
    await connect(router_store, a, cid=c4, user="u1", tenant=t2)  # same user id, other tenant
    await connect(router_store, b, cid=stale, user="u3", tenant=t1, held=False)

    answer = await router_stub.Publish(
        publish_request({"type": "notice", "n": 1}, connection_id=c1), timeout=5
    )
    assert (answer.matched, answer.delivered, answer.failed) == (1, 1, 0)
    assert a[0].frames[c1] == [{"type": "notice", "n": 1}]

    answer = await router_stub.Publish(
        publish_request({"n": 2}, user_id="u1", tenant_id_for_user=t1), timeout=5
    )
    assert (answer.matched, answer.delivered, answer.failed) == (2, 2, 0)
    assert a[0].frames[c1][-1] == b[0].frames[c2][-1] == {"type": "message", "n": 2}
    assert c4 not in a[0].frames  # the other tenant's u1 got nothing

    answer = await router_stub.Publish(publish_request({"type": "all", "n": 3}, tenant_id=t1), timeout=5)
    assert (answer.matched, answer.delivered, answer.failed) == (3, 3, 0)
    assert [f["n"] for f in a[0].frames[c3]] == [3]
    assert c4 not in a[0].frames
    # A fan-out reads no record: the stale one (its pod does not hold it) is not counted.
    assert await router_store.connections.get(stale) is not None


async def test_publish_to_an_unknown_connection_matches_nothing(
    router_stub: Any, ids: Callable[[str], str]
) -> None:
    answer = await router_stub.Publish(publish_request({"type": "x"}, connection_id=ids("nobody")), timeout=5)
    assert (answer.matched, answer.delivered, answer.failed) == (0, 0, 0)


@pytest.mark.parametrize(
    "request_factory",
    [
        lambda: publish_request({"type": "x"}, user_id="u1"),  # user without tenant
        lambda: router_pb2.PublishRequest(message=b'{"type":"x"}'),  # no target
        lambda: publish_request(["not", "an", "object"], tenant_id="t"),
        lambda: router_pb2.PublishRequest(target=router_pb2.PublishTarget(tenant_id="t"), message=b"{oops"),
    ],
)
async def test_publish_rejects_malformed_requests(router_stub: Any, request_factory: Any) -> None:
    with pytest.raises(aio.AioRpcError) as info:
        await router_stub.Publish(request_factory(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
