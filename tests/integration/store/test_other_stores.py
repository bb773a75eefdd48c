"""Connections, subscriptions and leases on real DynamoDB Local."""

from __future__ import annotations

import time

import pytest

from streamer.config import Settings, load_settings
from streamer.local.faultproxy import Fault, FaultProxy
from streamer.store import AlreadyExists, ConditionFailed, ConnectionRecord, Lease, NotFound, Store
from streamer.store.keys import request_key
from streamer.store.leases import SHARD_END, lease_key


async def test_connection_lifecycle(store: Store) -> None:
    rec = ConnectionRecord.new(
        connection_id="c1", user_id="u1", tenant_id="t1", endpoint="10.0.0.1:50051", metadata={"ua": "x"}
    )
    await store.connections.put(rec)
    assert await store.connections.get("c1") == rec
    assert rec.ttl >= int(time.time()) + 24 * 3600 - 5
    await store.connections.touch("c1", ttl_seconds=100)
    touched = await store.connections.get("c1")
    assert touched is not None and touched.ttl <= int(time.time()) + 101
    # a conditional delete against a stale endpoint leaves the record alone
    assert not await store.connections.delete("c1", endpoint="10.9.9.9:1")
    assert await store.connections.delete("c1", endpoint="10.0.0.1:50051")
    assert await store.connections.get("c1") is None
    with pytest.raises(NotFound):
        await store.connections.touch("c1")


async def test_connection_indexes_page(store: Store) -> None:
    for i in range(5):
        await store.connections.put(
            ConnectionRecord.new(
                connection_id=f"c{i}", user_id="u1" if i < 3 else "u2", tenant_id="t1", endpoint="e"
            )
        )
    await store.connections.put(
        ConnectionRecord.new(connection_id="x", user_id="u1", tenant_id="t2", endpoint="e")
    )
    assert len(await store.connections.by_user("u1", tenant_id="t1", page_size=1)) == 3
    assert len(await store.connections.by_tenant("t1", page_size=2)) == 5
    assert [c.connection_id for c in await store.connections.by_user("u1", tenant_id="t2")] == ["x"]
    assert len(await store.connections.by_endpoint("e")) == 6


async def test_subscriptions(store: Store) -> None:
    for cid in ("a", "b", "c"):
        await store.subscriptions.subscribe(request_id="r1", connection_id=cid, user_id="u", tenant_id="t")
    await store.subscriptions.subscribe(request_id="r2", connection_id="a", user_id="u", tenant_id="t")
    subs = await store.subscriptions.for_request("r1", page_size=1)
    assert sorted(s.connection_id for s in subs) == ["a", "b", "c"]
    assert all(s.ttl > time.time() for s in subs)
    assert await store.subscriptions.unsubscribe(request_id="r1", connection_id="b")
    assert not await store.subscriptions.unsubscribe(request_id="r1", connection_id="b")
    assert await store.subscriptions.delete_for_connection("a") == 2
    assert [s.connection_id for s in await store.subscriptions.for_request("r1")] == ["c"]


async def test_leases_are_fenced(store: Store) -> None:
    key = lease_key("arn:s", "shard-1")
    lease = await store.leases.create(
        Lease(lease_key=key, stream_arn="arn:s", shard_id="shard-1", parents=("p0",))
    )
    with pytest.raises(AlreadyExists):
        await store.leases.create(lease)
    mine = await store.leases.take(lease, owner="w1", duration=10)
    assert mine.owner == "w1" and mine.counter == 1 and mine.parents == ("p0",)
    # a second worker that read the lease before w1 took it cannot take it
    with pytest.raises(ConditionFailed):
        await store.leases.take(lease, owner="w2", duration=10)
    mine = await store.leases.renew(mine, duration=10)
    stolen = await store.leases.take(mine, owner="w2", duration=10)
    assert stolen.owner == "w2"
    with pytest.raises(ConditionFailed):  # w1 is fenced out
        await store.leases.checkpoint(mine, sequence="100")
    stolen = await store.leases.checkpoint(stolen, sequence=SHARD_END)
    assert stolen.finished
    released = await store.leases.release(stolen)
    assert released.owner is None and released.expired()
    assert [lease.lease_key for lease in await store.leases.all(stream_arn="arn:s")] == [key]
    assert await store.leases.all(stream_arn="arn:other") == []


async def test_subscribers_are_read_strongly_consistently(store: Store, settings: Settings) -> None:
    """Issue #18 item 4: with an eventually consistent read, a subscription written just
    before a request's outcome could be missed, and the outcome never reached it."""
    rid = request_key("t", f"r-{time.time_ns()}")
    async with FaultProxy(settings.dynamodb_endpoint or "", seed=1) as proxy:
        s = load_settings({}, dynamodb_endpoint=proxy.endpoint, table_prefix=settings.table_prefix)
        async with Store.open(settings=s) as stale:
            proxy.set_faults([Fault(kind="stale", stale=60.0)])
            assert await stale.subscriptions.for_request(rid) == []
            await store.subscriptions.subscribe(
                request_id=rid, connection_id="c1", user_id="u", tenant_id="t"
            )
            assert [x.connection_id for x in await stale.subscriptions.for_request(rid)] == ["c1"]
