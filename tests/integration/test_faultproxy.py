"""The DynamoDB fault proxy against DynamoDB Local, seen through our own store and botocore.

Each fault must look to the SDK exactly like the real service's: throttling and 500s are
retried by botocore and then surface as a retryable StoreError; an ambiguous write lands
and its retry meets its own condition; a stale read answers with an earlier state.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from botocore.exceptions import ClientError

from streamer.config import Settings, load_settings
from streamer.local.faultproxy import Fault, FaultProxy, parse_fault
from streamer.store import PENDING, PROCESSING, RequestRecord, Store, request_key
from streamer.store.errors import StoreError


@pytest.fixture
async def proxy(dynamodb: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(dynamodb, seed=7) as p:
        yield p


@pytest.fixture
async def via_proxy(settings: Settings, proxy: FaultProxy) -> AsyncIterator[Store]:
    """A store whose every call goes through the proxy (tables already made directly)."""
    s = load_settings({}, dynamodb_endpoint=proxy.endpoint, table_prefix=settings.table_prefix, log_json=True)
    async with Store.open(settings=s) as st:
        yield st


def new(rid: str) -> RequestRecord:
    return RequestRecord.new(
        request_id=rid, action="a", user_id="u", tenant_id="t", connection_id="c", payload={"x": 1}
    )


def test_fault_specs_parse() -> None:
    f = parse_fault("throttle:rate=0.25,ops=UpdateItem+PutItem,tables=requests")
    assert f == Fault(
        kind="throttle", rate=0.25, ops=frozenset({"UpdateItem", "PutItem"}), tables=frozenset({"requests"})
    )
    assert Fault.from_json(f.to_json()) == f
    assert parse_fault("stale:stale=0.5").stale == 0.5
    with pytest.raises(ValueError):
        parse_fault("explode")
    assert f.matches("UpdateItem", "pfx-requests") and not f.matches("UpdateItem", "pfx-leases")
    assert not Fault(kind="ambiguous").matches("Query", "x")


@pytest.mark.parametrize(
    ("kind", "code"),
    [("throttle", "ProvisionedThroughputExceededException"), ("error", "InternalServerError")],
)
async def test_throttling_and_500s_are_retried_by_the_sdk_then_surface_retryable(
    via_proxy: Store, proxy: FaultProxy, kind: str, code: str
) -> None:
    await via_proxy.requests.create(new("r1"))
    proxy.set_faults([Fault(kind=kind, ops=frozenset({"UpdateItem"}))])
    with pytest.raises(StoreError) as info:
        await via_proxy.requests.claim(request_key("t", "r1"), owner="w", attempt=1, claim_seconds=5)
    assert info.value.retryable and code in str(info.value)
    assert proxy.counts[("UpdateItem", kind)] >= 2  # the SDK retried before giving up
    proxy.set_faults([])
    assert (await via_proxy.requests.get(request_key("t", "r1"))).status == PENDING  # type: ignore[union-attr]


async def test_an_ambiguous_write_lands_and_the_sdk_retry_meets_its_own_condition(
    via_proxy: Store, store: Store, proxy: FaultProxy
) -> None:
    await via_proxy.requests.create(new("r2"))
    proxy.set_faults([Fault(kind="ambiguous", ops=frozenset({"UpdateItem"}))])
    with pytest.raises(ClientError) as info:  # what botocore itself reports
        await via_proxy.client.update_item(
            TableName=via_proxy.requests.table,
            Key={"request_id": {"S": request_key("t", "r2")}},
            UpdateExpression="SET #s = :p",
            ConditionExpression="#s = :pending",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":p": {"S": PROCESSING}, ":pending": {"S": PENDING}},
        )
    assert info.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert proxy.counts[("UpdateItem", "ambiguous")] == 1
    stored = await store.requests.get(request_key("t", "r2"))
    assert stored is not None and stored.status == PROCESSING  # it did land


async def test_stale_reads_answer_an_earlier_state_of_an_index(
    via_proxy: Store, store: Store, proxy: FaultProxy
) -> None:
    await store.requests.create(new("r3"))
    proxy.set_faults([Fault(kind="stale", stale=60.0)])
    assert [r.client_request_id for r in await via_proxy.requests.by_status(PENDING)] == ["r3"]
    await store.requests.claim(request_key("t", "r3"), owner="w", attempt=1, claim_seconds=5)
    # The index as it was: still PENDING, though the table says PROCESSING.
    assert [r.client_request_id for r in await via_proxy.requests.by_status(PENDING)] == ["r3"]
    assert proxy.counts[("Query", "stale")] == 1
    # Strongly consistent base-table reads are never stale.
    assert (await via_proxy.requests.get(request_key("t", "r3"))).status == PROCESSING  # type: ignore[union-attr]
    proxy.set_faults([])
    assert await via_proxy.requests.by_status(PENDING) == []


async def test_faults_are_seeded_and_changed_over_http(proxy: FaultProxy, via_proxy: Store) -> None:
    async with aiohttp.ClientSession() as http:
        body = [{"kind": "latency", "latency": 0.01, "ops": ["GetItem"]}]
        async with http.put(f"{proxy.endpoint}/_proxy/faults", data=json.dumps(body)) as resp:
            assert resp.status == 200
        await via_proxy.requests.get("nothing")
        async with http.get(f"{proxy.endpoint}/_proxy/stats") as resp:
            stats = await resp.json()
        assert stats["counts"]["GetItem"] == {"latency": 1}
        async with http.put(f"{proxy.endpoint}/_proxy/faults", data=json.dumps([{"kind": "nope"}])) as resp:
            assert resp.status == 400
    a, b = FaultProxy("http://x", faults=[Fault(kind="error", rate=0.5)], seed=3), None
    b = FaultProxy("http://x", faults=[Fault(kind="error", rate=0.5)], seed=3)
    assert [len(a._drawn("GetItem", "t")) for _ in range(50)] == [
        len(b._drawn("GetItem", "t")) for _ in range(50)
    ]


async def test_an_unreachable_upstream_cuts_the_connection(settings: Settings) -> None:
    from streamer.local.ports import free_port

    async with FaultProxy(f"http://127.0.0.1:{free_port('127.0.0.1')}") as dead:
        s = load_settings({}, dynamodb_endpoint=dead.endpoint, table_prefix=settings.table_prefix)
        async with Store.open(settings=s) as st:
            with pytest.raises(StoreError) as info:
                await st.requests.get("x")
        assert info.value.retryable
        assert dead.counts[("GetItem", "unreachable")] >= 1
