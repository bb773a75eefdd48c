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


#: The longest table name DynamoDB accepts.
MAX_TABLE_NAME = 255


def dedicated_requests_table(prefix: str, namespace: str, name: str) -> str:
    """The requests table of a handler with a dedicated queue: ``<prefix>-requests.<ns>.<name>``.

    Dots cannot appear in a namespace or a handler name (DNS labels), so two handlers
    never share a table name; the name stays within DynamoDB's limit (a hash replaces
    the end of an over-long one).
    """
    table = f"{prefix}-requests.{namespace or 'default'}.{name}"
    if len(table) <= MAX_TABLE_NAME:
        return table
    import hashlib

    digest = hashlib.sha256(table.encode()).hexdigest()[:16]
    return f"{table[: MAX_TABLE_NAME - 17]}.{digest}"


def requests_table_definition(
    name: str,
    *,
    point_in_time_recovery: bool = False,
    deletion_protection: bool = False,
    kms_key: str | None = None,
    encrypted: bool = False,
) -> dict[str, Any]:
    """CreateTable arguments of a requests table called ``name`` (shared or dedicated).

    ``encrypted`` asks for a KMS key (``kms_key``, or the AWS managed key when None);
    the default is DynamoDB's own encryption at rest. Point-in-time recovery is not a
    CreateTable argument: :func:`repair_table` turns it on.
    """
    definition = table_definitions(settings=Settings(requests_table=name))["requests"]
    if deletion_protection:
        definition["DeletionProtectionEnabled"] = True
    if encrypted or kms_key:
        sse: dict[str, Any] = {"Enabled": True, "SSEType": "KMS"}
        if kms_key:
            sse["KMSMasterKeyId"] = kms_key
        definition["SSESpecification"] = sse
    if point_in_time_recovery:
        definition["_PointInTimeRecovery"] = True  # applied after creation, see repair_table
    return definition


async def inspect_table(client: Any, definition: dict[str, Any]) -> list[str]:
    """What ``definition`` asks for that the live table lacks (``["missing"]`` if it is gone)."""
    name = definition["TableName"]
    try:
        desc = (await client.describe_table(TableName=name))["Table"]
    except BOTO_ERRORS as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return ["missing"]
        raise wrap_error(exc, f"DescribeTable {name}") from exc
    problems: list[str] = []
    live = {g["IndexName"] for g in desc.get("GlobalSecondaryIndexes", [])}
    problems += [
        f"index {g['IndexName']}"
        for g in definition.get("GlobalSecondaryIndexes", [])
        if g["IndexName"] not in live
    ]
    wanted_stream = definition.get("StreamSpecification")
    if wanted_stream:
        stream = desc.get("StreamSpecification") or {}
        if not stream.get("StreamEnabled") or stream.get("StreamViewType") != wanted_stream["StreamViewType"]:
            problems.append("stream")
    if not name.endswith("-leases"):
        ttl = (await client.describe_time_to_live(TableName=name)).get("TimeToLiveDescription", {})
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            problems.append("ttl")
    return problems


async def repair_table(client: Any, definition: dict[str, Any]) -> list[str]:
    """Create the table, or put back what it lacks (an index, its stream, TTL, PITR).

    Returns what was done (``["created"]``, ``["index status-index", "stream", ...]``).
    One index at a time, as DynamoDB allows; a later call adds the next one.
    """
    name = definition["TableName"]
    create = {k: v for k, v in definition.items() if not k.startswith("_")}
    done: list[str] = []
    problems = await inspect_table(client, definition)
    if "missing" in problems:
        try:
            await client.create_table(**create)
            done.append("created")
        except BOTO_ERRORS as exc:
            if error_code(exc) != "ResourceInUseException":
                raise wrap_error(exc, f"CreateTable {name}") from exc
        await _wait_active(client, name)
        problems = await inspect_table(client, definition)
    try:
        missing_indexes = [p.split(" ", 1)[1] for p in problems if p.startswith("index ")]
        if missing_indexes:
            (gsi,) = [g for g in create["GlobalSecondaryIndexes"] if g["IndexName"] == missing_indexes[0]]
            await client.update_table(
                TableName=name,
                AttributeDefinitions=create["AttributeDefinitions"],
                GlobalSecondaryIndexUpdates=[{"Create": gsi}],
            )
            done.append(f"index {gsi['IndexName']}")
            await _wait_active(client, name)
        if "stream" in problems:
            await client.update_table(TableName=name, StreamSpecification=create["StreamSpecification"])
            done.append("stream")
            await _wait_active(client, name)
        if "ttl" in problems:
            await _ensure_ttl(client, name)
            done.append("ttl")
        if definition.get("_PointInTimeRecovery"):
            backups = await client.describe_continuous_backups(TableName=name)
            pitr = backups.get("ContinuousBackupsDescription", {}).get("PointInTimeRecoveryDescription", {})
            if pitr.get("PointInTimeRecoveryStatus") != "ENABLED":
                await client.update_continuous_backups(
                    TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
                )
                done.append("point-in-time recovery")
    except BOTO_ERRORS as exc:
        raise wrap_error(exc, f"UpdateTable {name}") from exc
    return done


async def stream_arn_of(client: Any, name: str) -> str:
    """The ARN of table ``name``'s stream (empty when it has none)."""
    desc = (await client.describe_table(TableName=name))["Table"]
    return str(desc.get("LatestStreamArn") or "")


async def delete_table(client: Any, name: str) -> bool:
    """Delete one table; False when it was already gone."""
    try:
        await client.delete_table(TableName=name)
    except BOTO_ERRORS as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return False
        raise wrap_error(exc, f"DeleteTable {name}") from exc
    return True


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
