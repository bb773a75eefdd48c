"""What every store shares: the client, a table name, paging and error mapping."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any, TypeVar

from streamer.store.dynamo import (
    BOTO_ERRORS,
    deserialize_item,
    error_code,
    serialize,
    serialize_item,
    wrap_error,
)


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
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every item of a query, following LastEvaluatedKey across pages."""
        if index:
            kwargs["IndexName"] = index
        async for item in self._pages("query", page_size=page_size, **kwargs):
            yield item

    async def _scan_pages(
        self, *, page_size: int | None = None, **kwargs: Any
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every item of a scan (cleanup and small tables only), across pages."""
        async for item in self._pages("scan", page_size=page_size, **kwargs):
            yield item

    async def _pages(
        self, method: str, *, page_size: int | None, **kwargs: Any
    ) -> AsyncGenerator[dict[str, Any], None]:
        args: dict[str, Any] = dict(kwargs)
        if page_size:
            args["Limit"] = page_size
        while True:
            page = await self._call(method, **args)
            for item in page.get("Items", []):
                yield deserialize_item(item)
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            args["ExclusiveStartKey"] = last

    async def _create(self, item: Mapping[str, Any], *, key: str) -> bool:
        """Put ``item`` only if no item has its key; False when one already exists."""
        try:
            await self.client.put_item(
                TableName=self.table,
                Item=serialize_item(item),
                ConditionExpression=f"attribute_not_exists({key})",
            )
        except BOTO_ERRORS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise wrap_error(exc, f"PutItem {self.table}") from exc
        return True


R = TypeVar("R")


def record_from_item(cls: type[R], item: Mapping[str, Any]) -> dict[str, Any]:
    """The item's attributes that are fields of dataclass ``cls`` (others are index keys)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return {k: v for k, v in item.items() if k in names}
