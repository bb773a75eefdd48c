"""Tables are created idempotently with their indexes, TTL and the requests stream."""

from __future__ import annotations

import asyncio

from streamer.config import Settings
from streamer.store import RequestRecord, Store, request_key
from streamer.store.dynamo import deserialize_item, open_client
from streamer.store.tables import ensure_tables, requests_stream_arn, table_definitions


async def test_ensure_is_idempotent_and_complete(settings: Settings, store: Store) -> None:
    assert await ensure_tables(settings=settings) == []
    for kind, definition in table_definitions(settings=settings).items():
        desc = (await store.client.describe_table(TableName=definition["TableName"]))["Table"]
        assert desc["TableStatus"] == "ACTIVE"
        want = {g["IndexName"] for g in definition.get("GlobalSecondaryIndexes", [])}
        assert {g["IndexName"] for g in desc.get("GlobalSecondaryIndexes", [])} == want
        if kind != "leases":
            ttl = await store.client.describe_time_to_live(TableName=definition["TableName"])
            assert ttl["TimeToLiveDescription"]["AttributeName"] == "ttl"
    req = (await store.client.describe_table(TableName=settings.table_name("requests")))["Table"]
    assert req["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}


async def test_every_request_write_produces_a_stream_record(settings: Settings, store: Store) -> None:
    rec = RequestRecord.new(
        request_id="s-1", action="a", user_id="u", tenant_id="t", connection_id="c", payload={}
    )
    await store.requests.create(rec)
    tok = (
        await store.requests.claim(request_key("t", "s-1"), owner="w", attempt=1, claim_seconds=5)
    ).claim_token
    await store.requests.complete(
        request_key("t", "s-1"), owner="w", attempt=1, token=tok, result={"done": True}
    )

    arn = await requests_stream_arn(store.client, settings=settings)
    seen: list[tuple[str | None, str | None]] = []
    async with open_client("dynamodbstreams", settings=settings) as streams:
        shards = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]
        for shard in shards:
            it = (
                await streams.get_shard_iterator(
                    StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            for _ in range(20):
                out = await streams.get_records(ShardIterator=it)
                for r in out["Records"]:
                    old = r["dynamodb"].get("OldImage")
                    new = r["dynamodb"].get("NewImage")
                    seen.append(
                        (
                            deserialize_item(old)["status"] if old else None,
                            deserialize_item(new)["status"] if new else None,
                        )
                    )
                if len(seen) >= 3 or not out.get("NextShardIterator"):
                    break
                it = out["NextShardIterator"]
                await asyncio.sleep(0.05)
    assert seen == [(None, "PENDING"), ("PENDING", "PROCESSING"), ("PROCESSING", "COMPLETED")]
