"""The router's view of several requests tables: shared and dedicated queues (DynamoDB Local)."""

from __future__ import annotations

import pytest

from streamer.store import NotFound, RequestRecord, Store, request_key
from streamer.store.queues import QueuedRequests
from streamer.store.requests import CANCELLED, PROCESSING, RequestStore
from streamer.store.tables import dedicated_requests_table, repair_table, requests_table_definition


def K(rid: str) -> str:
    return request_key("t1", rid)


def _new(rid: str, action: str) -> RequestRecord:
    return RequestRecord.new(
        request_id=rid, action=action, user_id="u1", tenant_id="t1", connection_id="c1", payload={}
    )


async def test_requests_go_to_their_queue_and_are_found_by_id(store: Store) -> None:
    table = dedicated_requests_table(store.settings.table_prefix, "ns", "heavy")
    assert await repair_table(store.client, requests_table_definition(table)) == ["created", "ttl"]
    queued = QueuedRequests(
        store.client,
        store.requests.table,
        table_of=lambda action: table if action == "heavy.run" else "",
        tables=lambda: [table],
    )
    await queued.create(_new("light-1", "echo_async"))
    await queued.create(_new("heavy-1", "heavy.run"))
    own = RequestStore(store.client, table)
    assert await store.requests.get(K("heavy-1")) is None and await own.get(K("heavy-1")) is not None
    assert await own.get(K("light-1")) is None and await store.requests.get(K("light-1")) is not None
    assert (await queued.get(K("heavy-1"))).action == "heavy.run"  # type: ignore[union-attr]
    assert await queued.get(K("nobody")) is None
    mine = await queued.by_user(tenant_id="t1", user_id="u1")
    assert [r.client_request_id for r in mine] == ["light-1", "heavy-1"]

    # $cancel of a PENDING dedicated request lands in its table.
    assert (await queued.cancel(K("heavy-1"), tenant_id="t1")).status == CANCELLED
    assert (await own.get(K("heavy-1"))).status == CANCELLED  # type: ignore[union-attr]
    # A PROCESSING one gets cancel_requested, in its table too.
    await queued.create(_new("heavy-2", "heavy.run"))
    await own.claim(K("heavy-2"), owner="w", attempt=1, claim_seconds=30)
    assert (await queued.cancel(K("heavy-2"), tenant_id="t1")).status == PROCESSING
    assert (await own.get(K("heavy-2"))).cancel_requested is True  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await queued.cancel(K("heavy-2"), tenant_id="other")
    with pytest.raises(NotFound):
        await queued.cancel(K("nobody"), tenant_id="t1")

    # $subscribe's mark lands in the request's own table; an unknown id marks nothing.
    marked = await queued.mark_subscribed(K("heavy-2"))
    assert marked is not None and marked.subscribed
    assert (await own.get(K("heavy-2"))).subscribed is True  # type: ignore[union-attr]
    assert await store.requests.get(K("heavy-2")) is None  # no stray item in the shared table
    assert await queued.mark_subscribed(K("nobody")) is None


async def test_an_id_is_unique_across_queues(store: Store) -> None:
    from streamer.store.errors import AlreadyExists

    heavy = dedicated_requests_table(store.settings.table_prefix, "ns", "heavy")
    other = dedicated_requests_table(store.settings.table_prefix, "ns", "other")
    for table in (heavy, other):
        await repair_table(store.client, requests_table_definition(table))
    tables = {"heavy.run": heavy, "other.run": other}
    queued = QueuedRequests(
        store.client,
        store.requests.table,
        table_of=lambda action: tables.get(action, ""),
        tables=lambda: [heavy, other],
    )
    own = RequestStore(store.client, heavy)

    # Shared first, then the same id for a dedicated queue: one request, the first.
    await queued.create(_new("a", "echo_async"))
    with pytest.raises(AlreadyExists) as first:
        await queued.create(_new("a", "heavy.run"))
    assert first.value.existing is not None and first.value.existing.action == "echo_async"
    assert await own.get(K("a")) is None

    # Dedicated first, then shared, then another dedicated queue: still one request.
    await queued.create(_new("b", "heavy.run"))
    for action in ("echo_async", "other.run"):
        with pytest.raises(AlreadyExists) as again:
            await queued.create(_new("b", action))
        assert again.value.existing is not None and again.value.existing.action == "heavy.run"
    assert await RequestStore(store.client, other).get(K("b")) is None
    # The shared table holds only the marker: not a request to anyone reading it directly.
    assert await store.requests.get(K("b")) is None
    assert (await queued.get(K("b"))).action == "heavy.run"  # type: ignore[union-attr]
    # $subscribe's mark goes to the request, never onto the marker.
    await own.claim(K("b"), owner="w", attempt=1, claim_seconds=30)
    assert (await queued.mark_subscribed(K("b"))).subscribed  # type: ignore[union-attr]
    raw = await store.client.get_item(TableName=store.requests.table, Key={"request_id": {"S": K("b")}})
    assert set(raw["Item"]) == {"request_id", "queue_table", "ttl"}

    # A marker whose request was never written (the router died in between): the next
    # send of the id for that queue writes it; a send for another queue is refused.
    await store.client.put_item(
        TableName=store.requests.table,
        Item={"request_id": {"S": K("c")}, "queue_table": {"S": heavy}, "ttl": {"N": "4102444800"}},
    )
    with pytest.raises(AlreadyExists) as refused:
        await queued.create(_new("c", "other.run"))
    assert refused.value.existing is None
    await queued.create(_new("c", "heavy.run"))
    assert (await queued.get(K("c"))).action == "heavy.run"  # type: ignore[union-attr]


def test_the_shared_processors_skip_an_id_marker() -> None:
    from services.processor.claims import candidate_from_record, settled_from_record

    record = {
        "eventName": "INSERT",
        "dynamodb": {
            "NewImage": {"request_id": {"S": K("m")}, "queue_table": {"S": "x"}, "ttl": {"N": "1"}},
        },
    }
    assert candidate_from_record(record) is None and settled_from_record(record) is None
