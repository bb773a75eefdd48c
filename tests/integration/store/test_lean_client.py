"""The lean DynamoDB client against DynamoDB Local and the fault proxy.

Parity: every call answers what aiobotocore answers for the same parameters (responses,
exception classes, the modeled ``Item`` of a refused condition, binary values); and the
real service's failures, played by the fault proxy, are retried or surfaced as botocore
would (throttling, 500s, lost answers to writes that landed, a dead endpoint).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from streamer.config import Settings, load_settings
from streamer.local.faultproxy import Fault, FaultProxy
from streamer.store import Store
from streamer.store.dynamo import open_client, wrap_error
from streamer.store.lean import LeanDynamoDB, open_data_client


@pytest.fixture
async def both(settings: Settings) -> AsyncIterator[tuple[Any, Any]]:
    """(lean, aiobotocore) over the same DynamoDB Local."""
    lean_settings = dataclasses.replace(settings, dynamodb_client="lean")
    async with (
        open_data_client(settings=lean_settings) as lean,
        open_client("dynamodb", settings=settings) as boto,
    ):
        assert isinstance(lean, LeanDynamoDB)
        yield lean, boto


def _strip(out: dict[str, Any]) -> dict[str, Any]:
    """A response without what differs between two calls (request id, date, headers)."""
    meta = out.get("ResponseMetadata", {})
    assert meta.get("HTTPStatusCode") == 200 and meta.get("RetryAttempts") == 0, meta
    return {k: v for k, v in out.items() if k != "ResponseMetadata"}


async def _raised(call: Any) -> ClientError:
    with pytest.raises(ClientError) as info:
        await call
    return info.value


async def test_answers_as_aiobotocore_does(both: tuple[Any, Any], settings: Settings) -> None:
    lean, boto = both
    table = settings.table_name("requests")
    item = {
        "request_id": {"S": "lean-1"},
        "status": {"S": "PENDING"},
        "n": {"N": "1.5"},
        "blob": {"B": b"\x00\xffbinary"},
        "blobs": {"BS": [b"a", b"\x01"]},
        "nested": {"M": {"B": {"S": "an attribute named B"}, "l": {"L": [{"B": b"x"}, {"NULL": True}]}}},
    }
    for client, rid in ((lean, "lean-1"), (boto, "boto-1")):
        await client.put_item(TableName=table, Item={**item, "request_id": {"S": rid}})
    got = [
        _strip(await c.get_item(TableName=table, Key={"request_id": {"S": r}}, ConsistentRead=True))
        for c, r in ((lean, "boto-1"), (boto, "lean-1"))
    ]
    assert got[0]["Item"]["blob"] == {"B": b"\x00\xffbinary"}
    assert got[0]["Item"] == {**got[1]["Item"], "request_id": {"S": "boto-1"}}

    update = {
        "TableName": table,
        "UpdateExpression": "SET #s = :s ADD n :one",
        "ConditionExpression": "#s = :pending",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            ":s": {"S": "PROCESSING"},
            ":pending": {"S": "PENDING"},
            ":one": {"N": "1"},
        },
        "ReturnValues": "ALL_NEW",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    a = _strip(await lean.update_item(Key={"request_id": {"S": "lean-1"}}, **update))
    b = _strip(await boto.update_item(Key={"request_id": {"S": "boto-1"}}, **update))
    assert a["Attributes"]["status"] == {"S": "PROCESSING"} and a["Attributes"]["n"] == {"N": "2.5"}
    assert a["Attributes"] == {**b["Attributes"], "request_id": {"S": "lean-1"}}

    # A refused condition: the same exception class, code, message and modeled Item (ALL_OLD).
    e1 = await _raised(lean.update_item(Key={"request_id": {"S": "lean-1"}}, **update))
    e2 = await _raised(boto.update_item(Key={"request_id": {"S": "boto-1"}}, **update))
    assert type(e1) is type(e2) and type(e1).__name__ == "ConditionalCheckFailedException"
    assert str(e1) == str(e2)
    assert e1.response["Error"] == e2.response["Error"]
    assert set(e1.response) == set(e2.response) and {"Error", "ResponseMetadata", "Item"} <= set(e1.response)
    assert e1.response["Item"] == {**e2.response["Item"], "request_id": {"S": "lean-1"}}
    assert e1.response["Item"]["blob"] == {"B": b"\x00\xffbinary"}
    assert e1.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # An unmodeled-field error: a validation failure.
    bad = {"TableName": table, "Key": {"request_id": {"N": "1"}}}
    v1, v2 = await _raised(lean.get_item(**bad)), await _raised(boto.get_item(**bad))
    assert type(v1) is type(v2) and v1.response["Error"] == v2.response["Error"]
    assert set(v1.response) == set(v2.response)
    assert not wrap_error(v1, "GetItem").retryable

    # A missing table.
    m1 = await _raised(lean.get_item(TableName=table + "-none", Key={"request_id": {"S": "x"}}))
    m2 = await _raised(boto.get_item(TableName=table + "-none", Key={"request_id": {"S": "x"}}))
    assert type(m1) is type(m2) and m1.response["Error"] == m2.response["Error"]

    # Delete with ALL_OLD, and a query page.
    d = _strip(
        await lean.delete_item(TableName=table, Key={"request_id": {"S": "boto-1"}}, ReturnValues="ALL_OLD")
    )
    assert d["Attributes"]["request_id"] == {"S": "boto-1"}
    scan = {"TableName": table, "ConsistentRead": True}
    assert _strip(await lean.scan(**scan)) == _strip(await boto.scan(**scan))

    # Everything else is aiobotocore's.
    desc = await lean.describe_table(TableName=table)
    assert desc["Table"]["TableName"] == table
    assert lean.meta.region_name == boto.meta.region_name


async def test_the_stores_run_on_it(store: Store) -> None:
    assert isinstance(store.client, LeanDynamoDB)
    assert await store.ping()


async def test_retries_throttling_and_500s_until_they_stop(settings: Settings) -> None:
    async with FaultProxy(settings.dynamodb_endpoint or "", seed=3) as proxy:
        s = dataclasses.replace(settings, dynamodb_endpoint=proxy.endpoint, dynamodb_client="lean")
        async with open_data_client(settings=s) as lean:
            table = settings.table_name("requests")
            for kind, code in (
                ("throttle", "ProvisionedThroughputExceededException"),
                ("error", "InternalServerError"),
            ):
                proxy.set_faults([Fault(kind=kind, ops=frozenset({"PutItem"}))])
                before = proxy.injected(kind)
                err = await _raised(lean.put_item(TableName=table, Item={"request_id": {"S": f"{kind}-x"}}))
                assert err.response["Error"]["Code"] == code
                meta = err.response["ResponseMetadata"]
                assert meta["RetryAttempts"] == 2 and meta["MaxAttemptsReached"] is True
                assert "(reached max retries: 2)" in str(err)
                assert proxy.injected(kind) - before == 3  # max_attempts 3, as botocore's standard mode
                assert wrap_error(err, "PutItem").retryable

                # Faults that stop while the call waits: the retry goes through.
                before = proxy.injected(kind)
                call = asyncio.create_task(
                    lean.put_item(TableName=table, Item={"request_id": {"S": f"{kind}-ok"}})
                )
                for _ in range(500):
                    if proxy.injected(kind) > before:
                        break
                    await asyncio.sleep(0.01)
                proxy.set_faults([])
                out = await asyncio.wait_for(call, timeout=30)
                assert out["ResponseMetadata"]["RetryAttempts"] >= 1


async def test_a_lost_answer_to_a_landed_write_meets_its_own_condition(settings: Settings) -> None:
    """The ambiguous write: applied upstream, the connection cut before the answer; the
    retry is refused by its own condition and the refusal carries the item (ALL_OLD)."""
    async with FaultProxy(settings.dynamodb_endpoint or "", seed=5) as proxy:
        s = dataclasses.replace(settings, dynamodb_endpoint=proxy.endpoint, dynamodb_client="lean")
        async with open_data_client(settings=s) as lean:
            table = settings.table_name("requests")
            proxy.set_faults([Fault(kind="ambiguous", ops=frozenset({"PutItem"}))])
            err = await _raised(
                lean.put_item(
                    TableName=table,
                    Item={"request_id": {"S": "amb-1"}, "stamp": {"S": "ours"}},
                    ConditionExpression="attribute_not_exists(request_id)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            )
            assert proxy.injected("ambiguous") == 1
            assert err.response["Error"]["Code"] == "ConditionalCheckFailedException"
            assert err.response["Item"]["stamp"] == {"S": "ours"}
            assert err.response["ResponseMetadata"]["RetryAttempts"] == 1


async def test_a_dead_endpoint_is_botocores_connection_error(settings: Settings) -> None:
    async with FaultProxy(settings.dynamodb_endpoint or "", seed=1) as proxy:
        endpoint = proxy.endpoint
    dead = load_settings(
        {}, dynamodb_endpoint=endpoint, table_prefix=settings.table_prefix, dynamodb_client="lean"
    )
    async with open_data_client(settings=dead) as lean:
        with pytest.raises(EndpointConnectionError) as info:
            await lean.get_item(TableName="t", Key={"request_id": {"S": "x"}})
        assert wrap_error(info.value, "GetItem").retryable


async def test_botocore_puts_aiobotocore_back_under_the_stores(settings: Settings) -> None:
    from streamer.config import ConfigError

    chosen = load_settings(
        {"STREAMER_DYNAMODB_CLIENT": "botocore"},
        dynamodb_endpoint=settings.dynamodb_endpoint,
        table_prefix=settings.table_prefix,
    )
    async with Store.open(settings=chosen) as store:
        assert not isinstance(store.client, LeanDynamoDB)
        assert type(store.client).__name__ == "DynamoDB"  # aiobotocore's generated client class
        assert await store.requests.get("nothing") is None
    with pytest.raises(ConfigError, match="STREAMER_DYNAMODB_CLIENT"):
        load_settings({"STREAMER_DYNAMODB_CLIENT": "boto3"})
