"""What every store shares: the client, a table name, paging and error mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from streamer.store.dynamo import BOTO_ERRORS, deserialize_item, serialize, wrap_error


def now() -> float:
    """Wall-clock seconds (DynamoDB TTL and cross-process expiries need wall time)."""
    return time.time()


def expression(values: Mapping[str, Any]) -> dict[str, Any]:
    """ExpressionAttributeValues from plain values, keys given without the colon."""
    return {f":{k}": serialize(v) for k, v in values.items()}


class TableStore:
    """Base of the per-table stores: one client, one table name."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return await getattr(self.client, method)(TableName=self.table, **kwargs)  # type: ignore[no-any-return]
        except BOTO_ERRORS as exc:
            raise wrap_error(exc, f"{method} {self.table}") from exc

    async def _query_pages(
        self, *, index: str | None, page_size: int | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a query, following LastEvaluatedKey across pages."""
        args: dict[str, Any] = dict(kwargs)
        if index:
            args["IndexName"] = index
        if page_size:
            args["Limit"] = page_size
        while True:
            page = await self._call("query", **args)
            for item in page.get("Items", []):
                yield deserialize_item(item)
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            args["ExclusiveStartKey"] = last

    async def _scan_pages(
        self, *, page_size: int | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        args: dict[str, Any] = dict(kwargs)
        if page_size:
            args["Limit"] = page_size
        while True:
            page = await self._call("scan", **args)
            for item in page.get("Items", []):
                yield deserialize_item(item)
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            args["ExclusiveStartKey"] = last
