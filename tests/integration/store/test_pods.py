"""The connect pods directory (one item in the leases table) on real DynamoDB Local."""

from __future__ import annotations

import asyncio

from streamer.store import Lease, Store
from streamer.store import pods as pods_module
from streamer.store.keys import lease_key


async def test_pods_beat_expire_leave_and_share_the_table_with_leases_and_processors(
    store: Store,
) -> None:
    assert await store.pods.live() == []  # no directory yet
    await store.pods.leave("10.0.0.9:50051")  # nothing to remove: no error
    await asyncio.gather(  # concurrent first beats: one creates the directory, none is lost
        store.pods.beat("10.0.0.1:50051", duration=30),
        store.pods.beat("10.0.0.2:50051", duration=30),
        store.pods.beat("10.0.0.3:50051", duration=0.3),
    )
    assert await store.pods.live() == ["10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"]
    await asyncio.sleep(0.5)
    assert await store.pods.live() == ["10.0.0.1:50051", "10.0.0.2:50051"]  # expired
    await store.pods.leave("10.0.0.2:50051")
    assert await store.pods.live() == ["10.0.0.1:50051"]

    # Shard leases and processors' heartbeats share the table; neither sees the directory.
    lease = Lease(lease_key=lease_key("arn:stream", "shard-1"), stream_arn="arn:stream", shard_id="shard-1")
    await store.leases.create(lease)
    await store.leases.beat("worker-1", duration=30)
    assert [x.lease_key for x in await store.leases.all()] == [lease.lease_key]
    assert await store.leases.members() == ["worker-1"]


async def test_long_dead_entries_are_removed_by_the_next_beat(store: Store) -> None:
    await store.pods.beat("10.0.0.7:50051", duration=-pods_module.FORGET_AFTER - 1)  # dead for long
    await store.pods.beat("10.0.0.8:50051", duration=-1)  # dead, recently: kept for now
    await store.pods.beat("10.0.0.1:50051", duration=30)
    out = await store.client.get_item(
        TableName=store.pods.table, Key={"lease_key": {"S": pods_module.PODS_KEY}}, ConsistentRead=True
    )
    assert set(out["Item"]["pods"]["M"]) == {"10.0.0.8:50051", "10.0.0.1:50051"}
    assert await store.pods.live() == ["10.0.0.1:50051"]
