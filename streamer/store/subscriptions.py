"""Subscriptions: other connections that want a request's progress and result."""

from __future__ import annotations

import dataclasses
from typing import Any

from streamer.store.base import TableStore, expression, now, record_from_item
from streamer.store.dynamo import serialize, serialize_item

SUBSCRIPTION_TTL_SECONDS = 7 * 24 * 3600


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subscription:
    request_id: str
    connection_id: str
    user_id: str
    tenant_id: str
    created_at: float
    ttl: int

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Subscription:
        return cls(**record_from_item(cls, item))


class SubscriptionStore(TableStore):
    """The subscriptions table (key request_id + connection_id; ``connection-index``)."""

    async def subscribe(
        self,
        *,
        request_id: str,
        connection_id: str,
        user_id: str,
        tenant_id: str,
        ttl_seconds: float = SUBSCRIPTION_TTL_SECONDS,
    ) -> Subscription:
        t = now()
        sub = Subscription(
            request_id=request_id,
            connection_id=connection_id,
            user_id=user_id,
            tenant_id=tenant_id,
            created_at=t,
            ttl=int(t + ttl_seconds),
        )
        await self._call("put_item", Item=serialize_item(dataclasses.asdict(sub)))
        return sub

    async def unsubscribe(self, *, request_id: str, connection_id: str) -> bool:
        out = await self._call(
            "delete_item",
            Key={"request_id": serialize(request_id), "connection_id": serialize(connection_id)},
            ReturnValues="ALL_OLD",
        )
        return bool(out.get("Attributes"))

    async def for_request(self, request_id: str, *, page_size: int | None = None) -> list[Subscription]:
        """A request's subscribers, read strongly consistently (a base-table query).

        The outcome's delivery depends on it: a subscription written just before the
        final write must be seen when the final frame is sent (docs/architecture.md).
        """
        return [
            Subscription.from_item(item)
            async for item in self._query_pages(
                index=None,
                page_size=page_size,
                ConsistentRead=True,
                KeyConditionExpression="request_id = :r",
                ExpressionAttributeValues=expression({"r": request_id}),
            )
        ]

    async def for_connection(self, connection_id: str, *, page_size: int | None = None) -> list[Subscription]:
        return [
            Subscription.from_item(item)
            async for item in self._query_pages(
                index="connection-index",
                page_size=page_size,
                KeyConditionExpression="connection_id = :c",
                ExpressionAttributeValues=expression({"c": connection_id}),
            )
        ]

    async def delete_for_connection(self, connection_id: str) -> int:
        """Remove every subscription of a connection (on disconnect); returns how many."""
        subs = await self.for_connection(connection_id)
        for sub in subs:
            await self.unsubscribe(request_id=sub.request_id, connection_id=connection_id)
        return len(subs)
