"""DynamoDB storage: tables, and one async store per table.

Open everything at once with :class:`Store`::

    async with Store.open(settings=settings) as store:
        await store.requests.get("c-17")
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from streamer.config import Settings
from streamer.store.connections import ConnectionRecord, ConnectionStore
from streamer.store.errors import AlreadyExists, ConditionFailed, NotFound, StoreError, TransitionRefused
from streamer.store.keys import request_key, user_key
from streamer.store.lean import open_data_client
from streamer.store.leases import Lease, LeaseStore
from streamer.store.pods import ConnectPodStore
from streamer.store.requests import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    TERMINAL,
    RequestRecord,
    RequestStore,
)
from streamer.store.subscriptions import Subscription, SubscriptionStore
from streamer.store.tables import ensure_tables, requests_stream_arn

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "PENDING",
    "PROCESSING",
    "TERMINAL",
    "AlreadyExists",
    "ConditionFailed",
    "ConnectPodStore",
    "ConnectionRecord",
    "ConnectionStore",
    "Lease",
    "LeaseStore",
    "NotFound",
    "RequestRecord",
    "RequestStore",
    "Store",
    "StoreError",
    "Subscription",
    "SubscriptionStore",
    "TransitionRefused",
    "ensure_tables",
    "request_key",
    "requests_stream_arn",
    "user_key",
]


class Store:
    """The four table stores over one shared async DynamoDB client.

    The client is the lean one (:mod:`streamer.store.lean`) or aiobotocore's, as
    ``STREAMER_DYNAMODB_CLIENT`` says; table management stays on aiobotocore either way.
    """

    def __init__(self, client: Any, *, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.connections = ConnectionStore(client, settings.table_name("connections"))
        self.requests = RequestStore(client, settings.table_name("requests"))
        self.subscriptions = SubscriptionStore(client, settings.table_name("subscriptions"))
        self.leases = LeaseStore(client, settings.table_name("leases"))
        self.pods = ConnectPodStore(client, settings.table_name("leases"))

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, *, settings: Settings) -> AsyncIterator[Store]:
        async with open_data_client(settings=settings) as client:
            yield cls(client, settings=settings)

    async def ping(self) -> bool:
        """Readiness check: the requests table answers."""
        await self.client.describe_table(TableName=self.requests.table)
        return True
