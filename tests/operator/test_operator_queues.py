"""Dedicated queues against kmock and a real DynamoDB Local: table, consumer, conditions, repair."""

from __future__ import annotations

import uuid
from typing import Any

from operator_harness import Api, Cluster, condition, eventually, handler_body, run_operator
from streamer_operator import children
from streamer_operator.options import OperatorOptions

from streamer.config import load_settings
from streamer.store.dynamo import open_client
from streamer.store.tables import dedicated_requests_table

NS = "default"


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def _tables(settings: Any) -> list[str]:
    """Every table name, all pages (the session's DynamoDB Local holds more than one page)."""
    names: list[str] = []
    async with open_client("dynamodb", settings=settings) as client:
        kwargs: dict[str, Any] = {}
        while True:
            page = await client.list_tables(**kwargs)
            names += page["TableNames"]
            if not page.get("LastEvaluatedTableName"):
                return names
            kwargs["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]


async def test_a_dedicated_handler_gets_its_table_consumer_and_conditions(
    cluster: Cluster, api: Api, dynamodb: str
) -> None:
    settings = load_settings({}, dynamodb_endpoint=dynamodb, table_prefix=f"q{uuid.uuid4().hex[:8]}")
    options = OperatorOptions(
        resync_seconds=0.5,
        manage_tables=True,
        processor_image="streamer:9",
        processor_config_map="streamer",
        processor_service_account="streamer-processor",
    )
    table = dedicated_requests_table(settings.table_prefix, NS, "heavy")
    async with run_operator(cluster, api, settings=settings, options=options) as operator:
        queue = {"mode": "dedicated", "deletionPolicy": "Delete", "processors": {"replicas": 2}}
        await operator.create(handler_body("heavy", actions=["heavy.run"], queue=queue))

        processor = await operator.wait_child(children.DEPLOYMENTS, "heavy-processor")
        env = _env(processor)
        assert env["STREAMER_REQUESTS_TABLE"] == table
        assert env["STREAMER_QUEUE_HANDLER"] == "default/heavy"
        pod = processor["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "streamer-processor"
        assert pod["containers"][0]["image"] == "streamer:9"
        assert pod["containers"][0]["args"] == ["processor"]
        assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": "streamer"}}]
        assert processor["spec"]["replicas"] == 2
        assert processor["metadata"]["ownerReferences"][0]["name"] == "heavy"
        await operator.wait_child(children.PDBS, "heavy-processor")  # two processors: a PDB

        # The handler's pods are up, its consumer is not yet: not Serving, and that is why.
        await operator.make_available("heavy")
        waiting = await operator.wait_condition("heavy", "Serving", "False", reason="ConsumerNotReady")
        assert condition(waiting, "ConsumerReady")["reason"] == "NoReadyConsumer"
        assert condition(waiting, "TablesReady")["status"] == "True"
        assert waiting["status"]["queue"]["table"] == table
        assert waiting["status"]["queue"]["streamArn"].startswith("arn:aws:dynamodb:")

        await operator.make_available("heavy-processor", ready=2)
        ready = await operator.wait_condition("heavy", "Ready", "True")
        assert condition(ready, "ConsumerReady")["reason"] == "ConsumerAvailable"

        async with open_client("dynamodb", settings=settings) as client:
            desc = (await client.describe_table(TableName=table))["Table"]
            assert desc["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
            assert {g["IndexName"] for g in desc["GlobalSecondaryIndexes"]} >= {"status-index", "user-index"}
            # Deleted out of band: noticed on the next resync, reported, then recreated.
            await client.delete_table(TableName=table)
        noticed = await operator.wait_condition("heavy", "TablesReady", "False", reason="TableRecreated")
        assert table in condition(noticed, "TablesReady")["message"]
        assert condition(noticed, "Ready")["status"] == "False"
        await operator.wait_condition("heavy", "TablesReady", "True", reason="TablesExist")
        assert table in await _tables(settings)

        # Back to the shared queue: the processors go away (the table stays until deletion).
        await operator.api.patch(children.HANDLERS, NS, "heavy", {"spec": {"queue": {"mode": "shared"}}})

        async def consumer_gone() -> bool:
            return (
                await operator.child(children.DEPLOYMENTS, "heavy-processor") is None
                and await operator.child(children.PDBS, "heavy-processor") is None
            )

        await eventually(consumer_gone, what="the processor Deployment and PDB removed")

        async def back_to_shared() -> dict[str, Any] | None:
            # The children go before the status is written: Ready may still be the
            # dedicated generation's True for a moment, so wait for the queue itself.
            obj = await operator.handler("heavy")
            status = (obj or {}).get("status") or {}
            ready = condition(obj, "Ready").get("status") == "True" if obj else False
            return obj if ready and status.get("queue") == {"mode": "shared"} else None

        shared = await eventually(back_to_shared, what="the status back on the shared queue")
        assert condition(shared, "ConsumerReady") == {}

        # Dedicated again with deletionPolicy Delete: deleting the handler deletes its table.
        await operator.api.patch(children.HANDLERS, NS, "heavy", {"spec": {"queue": queue}})
        await operator.wait_child(children.DEPLOYMENTS, "heavy-processor")
        await operator.api.delete(children.HANDLERS, NS, "heavy")

        async def table_deleted() -> bool:
            return await operator.handler("heavy") is None and table not in await _tables(settings)

        await eventually(table_deleted, timeout=30, what="the handler and its table deleted")


async def test_a_retained_table_outlives_its_handler(cluster: Cluster, api: Api, dynamodb: str) -> None:
    settings = load_settings({}, dynamodb_endpoint=dynamodb, table_prefix=f"q{uuid.uuid4().hex[:8]}")
    options = OperatorOptions(resync_seconds=0.5, manage_tables=True)
    table = dedicated_requests_table(settings.table_prefix, NS, "keep")
    async with run_operator(cluster, api, settings=settings, options=options) as operator:
        await operator.create(handler_body("keep", actions=["keep.a"], queue={"mode": "dedicated"}))
        await operator.wait_condition("keep", "TablesReady", "True")
        assert await operator.child(children.PDBS, "keep-processor") is None  # one processor: no PDB
        await operator.api.delete(children.HANDLERS, NS, "keep")

        async def gone() -> bool:
            return await operator.handler("keep") is None

        await eventually(gone, what="the handler deleted")
    assert table in await _tables(settings)
