"""Table schemas and their idempotent creation.

Names are ``<prefix>-<kind>`` (``streamer-requests`` by default). ``ensure_tables``
creates what is missing, waits until every table is ACTIVE, then turns on TTL;
running it again (every service start, the operator, ``streamer tables create``)
changes nothing.

Indexes (all projecting ALL attributes, so a query never needs a second read):

- connections: ``user-index`` (user_id, connection_id), ``tenant-index`` (tenant_id, connection_id)
- requests: ``connection-index`` (connection_id, created_at), ``status-index`` (status,
  created_at), and ``user-index`` (user_key = tenant#user, created_at) — the last one is
  an addition to DESIGN §3: ``$resume`` must find a user's requests after the
  connection they were sent on is gone.
- subscriptions: ``connection-index`` (connection_id, request_id)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streamer.config import Settings
from streamer.store.dynamo import BOTO_ERRORS, error_code, open_client, wrap_error

log = logging.getLogger(__name__)

KINDS = ("connections", "requests", "subscriptions", "leases")
TTL_ATTRIBUTE = "ttl"


def _gsi(name: str, hash_key: str, range_key: str | None = None) -> dict[str, Any]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return {"IndexName": name, "KeySchema": schema, "Projection": {"ProjectionType": "ALL"}}


def table_definitions(*, settings: Settings) -> dict[str, dict[str, Any]]:
    """CreateTable arguments for every table, by kind (pure; tested without I/O)."""

    def attrs(**kinds: str) -> list[dict[str, str]]:
        return [{"AttributeName": k, "AttributeType": v} for k, v in kinds.items()]

    return {
        "connections": {
            "TableName": settings.table_name("connections"),
            "KeySchema": [{"AttributeName": "connection_id", "KeyType": "HASH"}],
            "AttributeDefinitions": attrs(connection_id="S", user_id="S", tenant_id="S"),
            "GlobalSecondaryIndexes": [
                _gsi("user-index", "user_id", "connection_id"),
                _gsi("tenant-index", "tenant_id", "connection_id"),
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
        "requests": {
            "TableName": settings.table_name("requests"),
            "KeySchema": [{"AttributeName": "request_id", "KeyType": "HASH"}],
            "AttributeDefinitions": attrs(
                request_id="S", connection_id="S", status="S", created_at="N", user_key="S"
            ),
            "GlobalSecondaryIndexes": [
                _gsi("connection-index", "connection_id", "created_at"),
                _gsi("status-index", "status", "created_at"),
                _gsi("user-index", "user_key", "created_at"),
            ],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            "BillingMode": "PAY_PER_REQUEST",
        },
        "subscriptions": {
            "TableName": settings.table_name("subscriptions"),
            "KeySchema": [
                {"AttributeName": "request_id", "KeyType": "HASH"},
                {"AttributeName": "connection_id", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": attrs(request_id="S", connection_id="S"),
            "GlobalSecondaryIndexes": [_gsi("connection-index", "connection_id", "request_id")],
            "BillingMode": "PAY_PER_REQUEST",
        },
        "leases": {
            "TableName": settings.table_name("leases"),
            "KeySchema": [{"AttributeName": "lease_key", "KeyType": "HASH"}],
            "AttributeDefinitions": attrs(lease_key="S"),
            "BillingMode": "PAY_PER_REQUEST",
        },
    }


async def _wait_active(client: Any, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        desc = (await client.describe_table(TableName=name))["Table"]
        gsis = desc.get("GlobalSecondaryIndexes", [])
        if desc["TableStatus"] == "ACTIVE" and all(g.get("IndexStatus", "ACTIVE") == "ACTIVE" for g in gsis):
            return desc  # type: ignore[no-any-return]
        if loop.time() > deadline:
            raise TimeoutError(f"table {name} not ACTIVE after {timeout}s")
        await asyncio.sleep(0.2)


async def _ensure_ttl(client: Any, name: str) -> None:
    desc = await client.describe_time_to_live(TableName=name)
    status = desc.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
    if status in ("ENABLED", "ENABLING"):
        return
    try:
        await client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
    except BOTO_ERRORS as exc:
        # Two starters racing: the loser is told TTL is already being enabled.
        if error_code(exc) != "ValidationException":
            raise


async def ensure_tables_with(client: Any, *, settings: Settings) -> list[str]:
    """Like :func:`ensure_tables` with an open ``dynamodb`` client; returns the names created."""
    created: list[str] = []
    for kind, definition in table_definitions(settings=settings).items():
        name = definition["TableName"]
        try:
            await client.create_table(**definition)
            created.append(name)
            log.info("created table", extra={"table": name, "kind": kind})
        except BOTO_ERRORS as exc:
            if error_code(exc) != "ResourceInUseException":
                raise wrap_error(exc, f"CreateTable {name}") from exc
        try:
            await _wait_active(client, name)
            if kind != "leases":
                await _ensure_ttl(client, name)
        except BOTO_ERRORS as exc:
            raise wrap_error(exc, f"DescribeTable {name}") from exc
    return created


async def ensure_tables(*, settings: Settings) -> list[str]:
    """Create every missing table (GSIs, requests stream, TTL); return the names created."""
    async with open_client("dynamodb", settings=settings) as client:
        return await ensure_tables_with(client, settings=settings)


async def requests_stream_arn(client: Any, *, settings: Settings) -> str:
    """The ARN of the requests table's stream (the processor's input)."""
    desc = (await client.describe_table(TableName=settings.table_name("requests")))["Table"]
    arn = desc.get("LatestStreamArn")
    if not arn:
        raise RuntimeError(f"table {settings.table_name('requests')} has no stream")
    return str(arn)


async def delete_tables(*, settings: Settings) -> None:
    """Delete every table of the prefix (tests and `streamer dev` cleanup)."""
    async with open_client("dynamodb", settings=settings) as client:
        for definition in table_definitions(settings=settings).values():
            try:
                await client.delete_table(TableName=definition["TableName"])
            except BOTO_ERRORS as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise wrap_error(exc, "DeleteTable") from exc
