"""Requests spread over the shared requests table and the dedicated queues of some handlers.

A handler with ``spec.queue.mode: dedicated`` has its own requests table (with its own
stream and processors, see docs/architecture.md). The router is the only service that
writes requests of every handler, so it alone sees more than one table, through
:class:`QueuedRequests`: a :class:`RequestStore` over the shared table that sends each
new request to the table of its action (a registry lookup) and finds a request by id in
whichever table holds it. Processors never need it: each consumes exactly one table
(``STREAMER_REQUESTS_TABLE``).

**A request id is unique across every queue**, as it is within one table: the id of a
request for a dedicated queue is first reserved in the shared table with an *id marker*
— an item with the request's key, ``queue_table`` (where the request is) and its
``ttl``, nothing else — by the same conditional put a shared request's create is. Both
kinds of create contend for that one key, so the same id sent to a shared and a
dedicated handler (or to two dedicated ones) makes one request; the second send gets
the first one's state (same user) or ``DUPLICATE_REQUEST``. Cost: nothing for a shared
request; one extra conditional ``PutItem`` of a ~100-byte item (1 write unit) per new
dedicated request, whose stream record the shared processors read and skip (no
``status``; in no index). A lookup by id reads the shared table first: a marker sends it
straight to its table (two ``GetItem``, where it used to be one per dedicated table). A
marker whose request was never written (the router died between the two puts) is
completed by the next send of the id. Requests written before markers existed are still
found by trying each dedicated table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from streamer.store.dynamo import deserialize_item, serialize
from streamer.store.errors import AlreadyExists, NotFound
from streamer.store.requests import RequestRecord, RequestStore

TableOf = Callable[[str], str]

#: The attribute of an id marker in the shared table: the table that holds the request.
MARKER_ATTRIBUTE = "queue_table"


class QueuedRequests(RequestStore):
    """The shared requests table, plus the dedicated tables the registry names.

    :param table_of: the requests table of an action ("" for the shared one).
    :param tables: every dedicated table known now (for lookups by id).
    """

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        table_of: TableOf,
        tables: Callable[[], Iterable[str]],
    ) -> None:
        super().__init__(client, table)
        self._table_of = table_of
        self._tables = tables
        # Plain stores, one per table (the shared one too): their own internal reads
        # (e.g. reading a refused transition back) must stay in their table.
        self._stores: dict[str, RequestStore] = {table: RequestStore(client, table)}

    def store_for(self, action: str) -> RequestStore:
        """The store of the table ``action``'s requests go to."""
        return self._store(self._table_of(action) or self.table)

    def _store(self, table: str) -> RequestStore:
        store = self._stores.get(table)
        if store is None:
            store = self._stores[table] = RequestStore(self.client, table)
        return store

    def tables(self) -> list[RequestStore]:
        return self._all()

    def _all(self) -> list[RequestStore]:
        """The shared table's store first, then each dedicated table's."""
        dedicated = sorted({t for t in self._tables() if t and t != self.table})
        return [self._store(self.table)] + [self._store(t) for t in dedicated]

    async def create(self, record: RequestRecord) -> RequestRecord:
        target = self.store_for(record.action)
        shared = self._store(self.table)
        if target is shared:
            if await shared._create(record.to_item(), key="request_id"):
                return record
            raise AlreadyExists(record.request_id, await self.get(record.request_id))
        marker = {"request_id": record.request_id, MARKER_ATTRIBUTE: target.table, "ttl": record.ttl}
        if not await shared._create(marker, key="request_id"):
            existing = await self.get(record.request_id)
            if existing is not None or await self._marked(record.request_id) != target.table:
                raise AlreadyExists(record.request_id, existing)
            # Our own marker, its request never written (a router died in between): write it.
        return await target.create(record)

    async def _marked(self, request_id: str) -> str | None:
        """The table an id marker names, or None (no item, or a request itself)."""
        item = await self._raw(request_id)
        return str(item[MARKER_ATTRIBUTE]) if item and item.get(MARKER_ATTRIBUTE) else None

    async def _raw(self, request_id: str) -> dict[str, Any] | None:
        out = await self._store(self.table)._call(
            "get_item", Key={"request_id": serialize(request_id)}, ConsistentRead=True
        )
        item = out.get("Item")
        return deserialize_item(item) if item else None

    async def holder(self, request_id: str) -> RequestStore | None:
        """The store of the table that holds the request (None: none does)."""
        item = await self._raw(request_id)
        if item is not None:
            marked = item.get(MARKER_ATTRIBUTE)
            if not marked:
                return self._store(self.table)
            store = self._store(str(marked))
            return store if await store.get(request_id) is not None else None
        for store in self._all()[1:]:  # requests written before id markers existed
            if await store.get(request_id) is not None:
                return store
        return None

    async def get(self, request_id: str) -> RequestRecord | None:
        item = await self._raw(request_id)
        if item is not None:
            marked = item.get(MARKER_ATTRIBUTE)
            if not marked:
                return RequestRecord.from_item(item)
            return await self._store(str(marked)).get(request_id)
        for store in self._all()[1:]:  # requests written before id markers existed
            found = await store.get(request_id)
            if found is not None:
                return found
        return None

    async def mark_subscribed(self, request_id: str) -> RequestRecord | None:
        if not self._all()[1:]:  # no dedicated queue: no marker to step on
            return await self._store(self.table).mark_subscribed(request_id)
        store = await self.holder(request_id)
        return None if store is None else await store.mark_subscribed(request_id)

    async def cancel(self, request_id: str, *, tenant_id: str) -> RequestRecord:
        store = await self.holder(request_id)
        if store is None:
            raise NotFound(request_id)
        return await store.cancel(request_id, tenant_id=tenant_id)

    async def by_user(
        self, *, tenant_id: str, user_id: str, since: float = 0.0, page_size: int | None = None
    ) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        for store in self._all():
            records += await store.by_user(
                tenant_id=tenant_id, user_id=user_id, since=since, page_size=page_size
            )
        return sorted(records, key=lambda r: r.created_at)
