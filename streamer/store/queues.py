"""Requests spread over the shared requests table and the dedicated queues of some handlers.

A handler with ``spec.queue.mode: dedicated`` has its own requests table (with its own
stream and processors, see docs/architecture.md). The router is the only service that
writes requests of every handler, so it alone sees more than one table, through
:class:`QueuedRequests`: a :class:`RequestStore` over the shared table that sends each
new request to the table of its action (a registry lookup) and finds a request by id in
whichever table holds it (the shared one first, then each dedicated one). Processors
never need it: each consumes exactly one table (``STREAMER_REQUESTS_TABLE``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from streamer.store.errors import NotFound
from streamer.store.requests import RequestRecord, RequestStore

TableOf = Callable[[str], str]


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
        return await self.store_for(record.action).create(record)

    async def get(self, request_id: str) -> RequestRecord | None:
        for store in self._all():
            found = await store.get(request_id)
            if found is not None:
                return found
        return None

    async def mark_subscribed(self, request_id: str) -> RequestRecord | None:
        for store in self._all():
            marked = await store.mark_subscribed(request_id)
            if marked is not None:
                return marked
        return None

    async def cancel(self, request_id: str, *, tenant_id: str) -> RequestRecord:
        for store in self._all():
            if await store.get(request_id) is not None:
                return await store.cancel(request_id, tenant_id=tenant_id)
        raise NotFound(request_id)

    async def by_user(
        self, *, tenant_id: str, user_id: str, since: float = 0.0, page_size: int | None = None
    ) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        for store in self._all():
            records += await store.by_user(
                tenant_id=tenant_id, user_id=user_id, since=since, page_size=page_size
            )
        return sorted(records, key=lambda r: r.created_at)
