"""A handler's dedicated queue: its requests table and the processors that consume it.

``spec.queue.mode: dedicated`` gives a StreamerHandler its own requests table (same key,
indexes, TTL and stream as the shared one, see :mod:`streamer.store.tables`) and a
processor Deployment (``<name>-processor``, plus a PDB when it runs more than one pod)
whose processors read only that table's stream (``STREAMER_REQUESTS_TABLE``).

The table is checked on every reconcile (the resync timer included): a table deleted
out of band, or one that lost an index, its stream or TTL, is reported as
``TablesReady=False`` (reason ``TableRecreated`` / ``TableRepaired``, the message says
what was missing) and put back in the same pass; the next check reports it healthy.

The builders here are pure; :class:`QueueTables` does the DynamoDB calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from streamer.config import Settings
from streamer.store.tables import dedicated_requests_table, requests_table_definition
from streamer_operator import children
from streamer_operator.options import OperatorOptions
from streamer_operator.status import Observation

log = logging.getLogger(__name__)

SHARED = "shared"
DEDICATED = "dedicated"
RETAIN = "Retain"
DELETE = "Delete"
PROCESSOR_SUFFIX = "-processor"
DEFAULT_PROCESSOR_REPLICAS = 1
PROCESSOR_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def queue_spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = (body.get("spec") or {}).get("queue") or {}
    return raw if isinstance(raw, Mapping) else {}


def mode_of(body: Mapping[str, Any]) -> str:
    return str(queue_spec(body).get("mode") or SHARED)


def is_dedicated(body: Mapping[str, Any]) -> bool:
    return mode_of(body) == DEDICATED


def table_name(body: Mapping[str, Any], *, prefix: str) -> str:
    return dedicated_requests_table(prefix, children.namespace_of(body), children.name_of(body))


def table_definition(body: Mapping[str, Any], *, prefix: str) -> dict[str, Any]:
    """CreateTable arguments of the handler's own requests table, with its options."""
    q = queue_spec(body)
    encryption = q.get("encryption") or {}
    return requests_table_definition(
        table_name(body, prefix=prefix),
        point_in_time_recovery=bool(q.get("pointInTimeRecovery")),
        deletion_protection=bool(q.get("deletionProtection")),
        encrypted=isinstance(encryption, Mapping) and encryption.get("type") == "KMS",
        kms_key=(encryption.get("kmsKeyId") or None) if isinstance(encryption, Mapping) else None,
    )


def processor_name(body: Mapping[str, Any]) -> str:
    return f"{children.name_of(body)}{PROCESSOR_SUFFIX}"


def processor_selector(body: Mapping[str, Any]) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "streamer-queue-processor",
        children.HANDLER_LABEL: children.name_of(body),
    }


def _processor_meta(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": processor_name(body),
        "namespace": children.namespace_of(body),
        "labels": {
            **processor_selector(body),
            "app.kubernetes.io/instance": children.name_of(body),
            "app.kubernetes.io/component": "queue-processor",
            "app.kubernetes.io/part-of": "streamer",
            children.MANAGED_BY_LABEL: children.MANAGER,
        },
        "ownerReferences": [children.owner_reference(body)],
    }


def processor_replicas(body: Mapping[str, Any]) -> int:
    raw = (queue_spec(body).get("processors") or {}).get("replicas")
    return DEFAULT_PROCESSOR_REPLICAS if raw is None else int(raw)


def processor_deployment(
    body: Mapping[str, Any], *, options: OperatorOptions, prefix: str, replicas: int | None = None
) -> dict[str, Any]:
    """The Deployment of the processors that consume this handler's table only."""
    q = queue_spec(body)
    processors = q.get("processors") or {}
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "STREAMER_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "STREAMER_REQUESTS_TABLE", "value": table_name(body, prefix=prefix)},
        {
            "name": "STREAMER_QUEUE_HANDLER",
            "value": f"{children.namespace_of(body)}/{children.name_of(body)}",
        },
        {"name": "STREAMER_HTTP_PORT", "value": "9090"},
    ]
    env_from: list[dict[str, Any]] = []
    if options.processor_config_map:
        env_from.append({"configMapRef": {"name": options.processor_config_map}})
    if options.processor_secret:
        env_from.append({"secretRef": {"name": options.processor_secret, "optional": True}})
    http_probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": "processor",
        "image": options.processor_image,
        "args": ["processor"],
        "ports": [{"name": "http", "containerPort": 9090, "protocol": "TCP"}],
        "env": env,
        "resources": processors.get("resources") or PROCESSOR_RESOURCES,
        "readinessProbe": http_probe,
        "livenessProbe": {**http_probe, "httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if env_from:
        container["envFrom"] = env_from
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        # A processor hands its claims back on SIGTERM within STREAMER_DRAIN_SECONDS.
        "terminationGracePeriodSeconds": 60,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": children.RUN_AS_USER,
            "runAsGroup": children.RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if options.processor_service_account:
        pod["serviceAccountName"] = options.processor_service_account
    spec: dict[str, Any] = {
        "replicas": processor_replicas(body) if replicas is None else replicas,
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": processor_selector(body)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": {
                    **_processor_meta(body)["labels"],
                    **dict(options.processor_pod_labels),
                    **processor_selector(body),
                },
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            },
            "spec": pod,
        },
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _processor_meta(body), "spec": spec}


def processor_pdb(body: Mapping[str, Any]) -> dict[str, Any] | None:
    if processor_replicas(body) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _processor_meta(body),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": processor_selector(body)}},
    }


def consumer_observation(deployment: Mapping[str, Any] | None) -> Observation:
    """ConsumerReady: at least one processor of the dedicated queue is ready."""
    if deployment is None:
        return Observation(
            status=False, reason="ConsumerNotFound", message="the processor Deployment does not exist yet"
        )
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    if ready > 0:
        return Observation(status=True, reason="ConsumerAvailable", message=f"{ready} processor(s) ready")
    if (deployment.get("spec") or {}).get("replicas") == 0:
        return Observation(status=False, reason="ScaledToZero", message="no processor runs (scaled to zero)")
    return Observation(
        status=False, reason="NoReadyConsumer", message="no processor of the queue is ready yet"
    )


@dataclasses.dataclass(frozen=True)
class TableState:
    observation: Observation
    table: str = ""
    stream_arn: str = ""


Inspect = Callable[[dict[str, Any]], Awaitable[tuple[list[str], list[str], str]]]


async def _default_inspect(
    definition: dict[str, Any], *, settings: Settings
) -> tuple[list[str], list[str], str]:
    from streamer.store.dynamo import open_client
    from streamer.store.tables import inspect_table, repair_table, stream_arn_of

    async with open_client("dynamodb", settings=settings) as client:
        problems = await inspect_table(client, definition)
        done = (
            await repair_table(client, definition)
            if problems or definition.get("_PointInTimeRecovery")
            else []
        )
        return problems, done, await stream_arn_of(client, definition["TableName"])


class QueueTables:
    """Checks, creates and repairs dedicated tables; deletes them with ``deletionPolicy: Delete``."""

    def __init__(self, *, settings: Settings, manage: bool = True, timeout_seconds: float = 120.0) -> None:
        self.settings = settings
        self.manage = manage
        self.timeout_seconds = timeout_seconds

    async def observe(self, body: Mapping[str, Any]) -> TableState:
        table = table_name(body, prefix=self.settings.table_prefix)
        if not self.manage:
            return TableState(
                Observation(
                    status=True, reason="NotManaged", message=f"{table} is managed outside the operator"
                ),
                table,
            )
        definition = table_definition(body, prefix=self.settings.table_prefix)
        try:
            problems, done, arn = await asyncio.wait_for(
                _default_inspect(definition, settings=self.settings), self.timeout_seconds
            )
        except Exception as exc:  # a condition to report, never a crash
            log.warning("checking a dedicated table failed", extra={"table": table, "error": repr(exc)})
            return TableState(
                Observation(
                    status=False, reason="EnsureFailed", message=f"{table}: {type(exc).__name__}: {exc}"[:500]
                ),
                table,
            )
        if "missing" in problems:
            return TableState(
                Observation(
                    status=False, reason="TableRecreated", message=f"table {table} was missing: created it"
                ),
                table,
                arn,
            )
        if problems:
            return TableState(
                Observation(
                    status=False,
                    reason="TableRepaired",
                    message=(
                        f"table {table} lacked {', '.join(problems)}: "
                        f"put back {', '.join(done) or 'nothing yet'}"
                    ),
                ),
                table,
                arn,
            )
        return TableState(
            Observation(status=True, reason="TablesExist", message=f"table {table} is active"), table, arn
        )

    async def delete(self, body: Mapping[str, Any]) -> bool:
        """Delete the handler's table (``deletionPolicy: Delete``); False if already gone."""
        from streamer.store.dynamo import open_client
        from streamer.store.tables import delete_table

        async with open_client("dynamodb", settings=self.settings) as client:
            return await delete_table(client, table_name(body, prefix=self.settings.table_prefix))
