"""Backlog autoscaling against kmock and DynamoDB Local; external scaling through /scale."""

from __future__ import annotations

import uuid
from typing import Any

from operator_harness import Api, Cluster, condition, eventually, handler_body, run_operator
from streamer_operator import children
from streamer_operator.options import OperatorOptions

from streamer.config import load_settings
from streamer.store import RequestRecord, Store
from streamer.store.keys import request_key
from streamer.store.tables import ensure_tables

NS = "default"


async def _replicas(operator: Any, name: str) -> int | None:
    dep = await operator.child(children.DEPLOYMENTS, name)
    return None if dep is None else dep["spec"].get("replicas")


async def test_backlog_up_scales_up_and_idle_scales_to_zero(
    cluster: Cluster, api: Api, dynamodb: str
) -> None:
    settings = load_settings({}, dynamodb_endpoint=dynamodb, table_prefix=f"a{uuid.uuid4().hex[:8]}")
    await ensure_tables(settings=settings)
    options = OperatorOptions(resync_seconds=0.3, autoscale_seconds=0.3, manage_tables=True)
    scaling = {
        "metric": "backlog",
        "minReplicas": 0,
        "maxReplicas": 4,
        "targetBacklogPerReplica": 2,
        "scaleDownStabilizationSeconds": 2,
    }
    async with run_operator(cluster, api, settings=settings, options=options) as operator:
        await operator.create(handler_body("busy", actions=["busy.run"], autoscaling=scaling))
        # Idle from the start: zero pods, and still Serving (requests queue and wake it).
        idle = await operator.wait_condition("busy", "Serving", "True", reason="ScaledToZero")
        assert await _replicas(operator, "busy") == 0
        assert condition(idle, "DeploymentAvailable")["reason"] == "ScaledToZero"
        assert await operator.child(children.HPAS, "busy") is None

        async with Store.open(settings=settings) as store:
            for i in range(5):
                await store.requests.create(
                    RequestRecord.new(
                        request_id=f"r{i}",
                        action="busy.run",
                        user_id="u",
                        tenant_id="t",
                        connection_id="c",
                        payload={},
                        handler="busy",
                    )
                )

            async def scaled_up() -> bool:
                return await _replicas(operator, "busy") == 3  # ceil(5 / 2)

            await eventually(scaled_up, what="3 replicas for a backlog of 5")

            async def status_says_3() -> bool:
                # The Deployment is scaled before the status is written: wait for the status.
                handler = await operator.handler("busy")
                return handler is not None and handler["status"].get("desiredReplicas") == 3

            await eventually(status_says_3, what="status.desiredReplicas 3")

            for i in range(5):
                await store.requests.cancel(request_key("t", f"r{i}"), tenant_id="t")

        async def scaled_to_zero() -> bool:
            return await _replicas(operator, "busy") == 0

        await eventually(scaled_to_zero, what="back to zero once idle for the down window")


async def test_external_autoscaling_leaves_replicas_to_the_scale_subresource(operator: Any) -> None:
    await operator.create(
        handler_body(
            "keda", actions=["keda.run"], replicas=1, autoscaling={"external": True, "maxReplicas": 10}
        )
    )
    dep = await operator.wait_child(children.DEPLOYMENTS, "keda")
    assert dep["spec"]["replicas"] == 1
    assert await operator.child(children.HPAS, "keda") is None
    handler = await operator.wait_condition("keda", "Ready", "False")
    assert (
        handler["status"]["selector"] == "app.kubernetes.io/name=streamer-handler,streamer.dev/handler=keda"
    )

    # What HPA or KEDA do: write spec.replicas through the scale subresource.
    await operator.api.patch(children.HANDLERS, NS, "keda", {"spec": {"replicas": 7}}, sub="scale")

    async def followed() -> bool:
        return await _replicas(operator, "keda") == 7

    await eventually(followed, what="the Deployment at the scale subresource's count")
    await operator.make_available("keda", ready=7)
    ready = await operator.wait_condition("keda", "Ready", "True")
    assert ready["status"]["replicas"] == 7
