"""TablesReady: the operator creates the DynamoDB tables in a real DynamoDB Local."""

from __future__ import annotations

import socket
import uuid

from operator_harness import Api, Cluster, condition, handler_body, run_operator
from streamer_operator.options import OperatorOptions
from streamer_operator.tables import TablesGate

from streamer.config import load_settings
from streamer.store.dynamo import open_client


async def test_tables_are_ensured_before_a_handler_is_ready(
    cluster: Cluster, api: Api, dynamodb: str
) -> None:
    settings = load_settings({}, dynamodb_endpoint=dynamodb, table_prefix=f"op{uuid.uuid4().hex[:8]}")
    options = OperatorOptions(resync_seconds=0.5, manage_tables=True)
    async with run_operator(cluster, api, settings=settings, options=options) as operator:
        await operator.create(handler_body("tables", actions=["tables.a"]))
        await operator.make_available("tables")
        ready = await operator.wait_condition("tables", "Ready", "True")
        tables_ready = condition(ready, "TablesReady")
        assert tables_ready["reason"] == "TablesExist"
        assert settings.table_prefix in tables_ready["message"]

    async with open_client("dynamodb", settings=settings) as client:
        for kind in ("connections", "requests", "subscriptions", "leases"):
            # describe_table, not list_tables: the session's DynamoDB Local holds more than a page.
            described = await client.describe_table(TableName=settings.table_name(kind))
            assert described["Table"]["TableStatus"] == "ACTIVE"
        requests = (await client.describe_table(TableName=settings.table_name("requests")))["Table"]
        assert requests["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        indexes = {gsi["IndexName"] for gsi in requests["GlobalSecondaryIndexes"]}
        assert {"connection-index", "status-index"} <= indexes


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_dynamodb_keeps_the_handler_not_ready(cluster: Cluster, api: Api) -> None:
    settings = load_settings(
        {}, dynamodb_endpoint=f"http://127.0.0.1:{_closed_port()}", table_prefix="unreachable"
    )
    gate = TablesGate(settings=settings, retry_seconds=60, timeout_seconds=2)
    options = OperatorOptions(resync_seconds=0.5, manage_tables=True)
    async with run_operator(cluster, api, settings=settings, options=options, tables=gate) as operator:
        await operator.create(handler_body("nodb", actions=["nodb.a"]))
        await operator.make_available("nodb")
        blocked = await operator.wait_condition("nodb", "Ready", "False", reason="TablesNotReady")
        tables_ready = condition(blocked, "TablesReady")
        assert tables_ready["status"] == "False"
        assert tables_ready["reason"] == "EnsureFailed"
        assert condition(blocked, "DeploymentAvailable")["status"] == "True"


async def test_a_shared_table_deleted_out_of_band_is_noticed_and_recreated(
    cluster: Cluster, api: Api, dynamodb: str
) -> None:
    settings = load_settings({}, dynamodb_endpoint=dynamodb, table_prefix=f"op{uuid.uuid4().hex[:8]}")
    options = OperatorOptions(resync_seconds=0.5, manage_tables=True, tables_retry_seconds=0.5)
    table = settings.table_name("subscriptions")
    async with run_operator(cluster, api, settings=settings, options=options) as operator:
        await operator.create(handler_body("shared", actions=["shared.a"]))
        await operator.make_available("shared")
        await operator.wait_condition("shared", "Ready", "True")
        async with open_client("dynamodb", settings=settings) as client:
            await client.delete_table(TableName=table)

        noticed = await operator.wait_condition("shared", "TablesReady", "False", reason="TableRecreated")
        assert table in condition(noticed, "TablesReady")["message"]
        assert condition(noticed, "Ready")["status"] == "False"
        await operator.wait_condition("shared", "TablesReady", "True", reason="TablesExist")
        await operator.wait_condition("shared", "Ready", "True")
        async with open_client("dynamodb", settings=settings) as client:
            described = await client.describe_table(TableName=table)
            assert described["Table"]["TableStatus"] == "ACTIVE"
            # A lost TTL is put back too, and reported the same way.
            await client.update_time_to_live(
                TableName=table, TimeToLiveSpecification={"Enabled": False, "AttributeName": "ttl"}
            )
        repaired = await operator.wait_condition("shared", "TablesReady", "False", reason="TableRepaired")
        assert "ttl" in condition(repaired, "TablesReady")["message"]
        await operator.wait_condition("shared", "TablesReady", "True", reason="TablesExist")
