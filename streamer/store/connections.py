"""Connection records: who is connected, and which connect pod holds the socket."""

from __future__ import annotations

import dataclasses
from typing import Any

from streamer.store.base import TableStore, expression, now, record_from_item
from streamer.store.dynamo import (
    BOTO_ERRORS,
    deserialize_item,
    error_code,
    serialize,
    serialize_item,
    wrap_error,
)
from streamer.store.errors import NotFound

CONNECTION_TTL_SECONDS = 24 * 3600


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionRecord:
    """One WebSocket connection; ``endpoint`` is its connect pod's gRPC address."""

    connection_id: str
    user_id: str
    tenant_id: str
    endpoint: str
    connected_at: float
    last_seen: float
    ttl: int
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def new(
        cls,
        *,
        connection_id: str,
        user_id: str,
        tenant_id: str,
        endpoint: str,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float = CONNECTION_TTL_SECONDS,
    ) -> ConnectionRecord:
        t = now()
        return cls(
            connection_id=connection_id,
            user_id=user_id,
            tenant_id=tenant_id,
            endpoint=endpoint,
            connected_at=t,
            last_seen=t,
            ttl=int(t + ttl_seconds),
            metadata=dict(metadata or {}),
        )

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ConnectionRecord:
        return cls(**record_from_item(cls, item))


class ConnectionStore(TableStore):
    """The connections table (key ``connection_id``; ``user-index``, ``tenant-index``)."""

    async def put(self, record: ConnectionRecord) -> None:
        await self._call("put_item", Item=serialize_item(dataclasses.asdict(record)))

    async def get(self, connection_id: str) -> ConnectionRecord | None:
        out = await self._call(
            "get_item", Key={"connection_id": serialize(connection_id)}, ConsistentRead=True
        )
        item = out.get("Item")
        return ConnectionRecord.from_item(deserialize_item(item)) if item else None

    async def delete(
        self, connection_id: str, *, endpoint: str | None = None, seen_before: float | None = None
    ) -> bool:
        """Delete the record; with ``endpoint``, only if it still points there; with
        ``seen_before``, only if its ``last_seen`` is older than that.

        The endpoint condition stops a sender that found a stale endpoint from deleting
        the record of a client that has since reconnected with the same id elsewhere;
        the ``last_seen`` one spares a record its connect pod refreshed meanwhile.
        Returns whether a record was deleted.
        """
        kwargs: dict[str, Any] = {
            "Key": {"connection_id": serialize(connection_id)},
            "ReturnValues": "ALL_OLD",
        }
        conditions: list[str] = []
        values: dict[str, Any] = {}
        if endpoint is not None:
            conditions.append("endpoint = :e")
            values["e"] = endpoint
        if seen_before is not None:
            conditions.append("last_seen < :seen")
            values["seen"] = seen_before
        if conditions:
            kwargs["ConditionExpression"] = " AND ".join(conditions)
            kwargs["ExpressionAttributeValues"] = expression(values)
        try:
            out = await self.client.delete_item(TableName=self.table, **kwargs)
        except BOTO_ERRORS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise wrap_error(exc, f"DeleteItem {self.table}") from exc
        return bool(out.get("Attributes"))

    async def touch(self, connection_id: str, *, ttl_seconds: float = CONNECTION_TTL_SECONDS) -> None:
        """Refresh ``last_seen`` and the TTL; :class:`NotFound` if the record is gone."""
        t = now()
        try:
            await self.client.update_item(
                TableName=self.table,
                Key={"connection_id": serialize(connection_id)},
                UpdateExpression="SET last_seen = :t, #ttl = :ttl",
                ConditionExpression="attribute_exists(connection_id)",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues=expression({"t": t, "ttl": int(t + ttl_seconds)}),
            )
        except BOTO_ERRORS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise NotFound(connection_id) from exc
            raise wrap_error(exc, f"UpdateItem {self.table}") from exc

    async def by_user(
        self, user_id: str, *, tenant_id: str, page_size: int | None = None
    ) -> list[ConnectionRecord]:
        """Every connection of a user within a tenant (all pages)."""
        return [
            ConnectionRecord.from_item(item)
            async for item in self._query_pages(
                index="user-index",
                page_size=page_size,
                KeyConditionExpression="user_id = :u",
                FilterExpression="tenant_id = :t",
                ExpressionAttributeValues=expression({"u": user_id, "t": tenant_id}),
            )
        ]

    async def by_tenant(self, tenant_id: str, *, page_size: int | None = None) -> list[ConnectionRecord]:
        """Every connection of a tenant (all pages)."""
        return [
            ConnectionRecord.from_item(item)
            async for item in self._query_pages(
                index="tenant-index",
                page_size=page_size,
                KeyConditionExpression="tenant_id = :t",
                ExpressionAttributeValues=expression({"t": tenant_id}),
            )
        ]

    async def by_endpoint(self, endpoint: str) -> list[ConnectionRecord]:
        """Connections recorded against one connect pod (a scan: for cleanup, not hot paths)."""
        return [
            ConnectionRecord.from_item(item)
            async for item in self._scan_pages(
                FilterExpression="endpoint = :e", ExpressionAttributeValues=expression({"e": endpoint})
            )
        ]
