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
