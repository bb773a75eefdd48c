"""The backlog autoscaler reads what a real processor process exports on /metrics.

A real ``streamer processor`` process measures its queue (DynamoDB Local) and exports
``streamer_processor_backlog`` per handler; the operator (kopf on kmock) finds its pod
through the API and scales the handler from that reading. Once the processor is gone, the
operator measures the table itself, so the handler still scales (and would wake from zero).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from operator_harness import Api, Cluster, eventually, handler_body, run_operator
from streamer_operator import autoscale, children, scrape
from streamer_operator.options import OperatorOptions

from streamer.config import Settings, load_settings
from streamer.local.ports import free_port
from streamer.store import RequestRecord, Store
from streamer.store.keys import request_key
from streamer.store.tables import ensure_tables

PROCESSOR_NS = "streamer"
POD_LABELS = (("app.kubernetes.io/instance", "t"), ("app.kubernetes.io/component", "processor"))


@contextlib.asynccontextmanager
async def processor_process(settings: Settings, run_dir: pathlib.Path) -> AsyncIterator[tuple[Any, int]]:
    """``streamer processor`` as its own process, until the block ends; yields it and its http port."""
    registry = run_dir / "registry.yaml"
    registry.write_text("# no handlers: the requests of this test stay PENDING\n")
    http, grpc = free_port(), free_port()
    env = {
        **os.environ,
        "STREAMER_DYNAMODB_ENDPOINT": str(settings.dynamodb_endpoint),
        "STREAMER_TABLE_PREFIX": settings.table_prefix,
        "STREAMER_HOST": "127.0.0.1",
        "STREAMER_BACKLOG_INTERVAL_SECONDS": "0.3",
        "STREAMER_LOG_JSON": "false",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
    }
    log = (run_dir / "processor.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer.cli.main",
        "processor",
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--registry",
        str(registry),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield proc, http
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        log.close()


async def _metrics(port: int) -> str:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            return await resp.text() if resp.status == 200 else ""
    except aiohttp.ClientError:
        return ""


def _count(source: str) -> float:
    return float(autoscale.READINGS.labels(source)._value.get())


async def test_the_autoscaler_reads_the_processors_and_falls_back_to_the_table(
    cluster: Cluster, api: Api, dynamodb: str, tmp_path: pathlib.Path
) -> None:
    settings = load_settings({}, dynamodb_endpoint=dynamodb, table_prefix=f"b{uuid.uuid4().hex[:8]}")
    await ensure_tables(settings=settings)
    table = settings.table_name("requests")
    async with Store.open(settings=settings) as store:
        for i in range(5):
            record = RequestRecord.new(
                request_id=f"r{i}",
                action="busy.run",
                user_id="u",
                tenant_id="t",
                connection_id="c",
                payload={},
                handler="busy",
            )
            # Scheduled an hour ahead: PENDING for the whole test, whatever the processor does.
            await store.requests.create(dataclasses.replace(record, not_before=time.time() + 3600))

    async with processor_process(settings, tmp_path) as (proc, http):
        # The process itself exports the backlog of its queue, per handler.
        async def exported() -> bool:
            samples = scrape.parse(await _metrics(http))
            reading = scrape.reading([samples], queue=table, handler="busy")
            return reading is not None and reading.pending == 5 and reading.oldest_seconds > 0

        await eventually(exported, timeout=60, what="streamer_processor_backlog of busy = 5 on /metrics")

        # Its pod, as the API server shows it to the operator.
        await api.create(
            scrape.PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "processor-0", "namespace": PROCESSOR_NS, "labels": dict(POD_LABELS)},
                "spec": {
                    "containers": [{"name": "processor", "ports": [{"name": "http", "containerPort": http}]}]
                },
                "status": {"phase": "Running", "podIP": "127.0.0.1"},
            },
        )
        options = OperatorOptions(
            resync_seconds=0.3,
            autoscale_seconds=0.3,
            manage_tables=True,
            processor_namespace=PROCESSOR_NS,
            processor_pod_labels=POD_LABELS,
        )
        scaling = {
            "metric": "backlog",
            "minReplicas": 0,
            "maxReplicas": 4,
            "targetBacklogPerReplica": 2,
            "scaleDownStabilizationSeconds": 1,
        }
        async with run_operator(cluster, api, settings=settings, options=options) as operator:
            from_index = _count("index")
            from_processors = _count("processors")
            await operator.create(handler_body("busy", actions=["busy.run"], autoscaling=scaling))

            async def replicas(n: int) -> bool:
                dep = await operator.child(children.DEPLOYMENTS, "busy")
                return dep is not None and dep["spec"].get("replicas") == n

            await eventually(lambda: replicas(3), timeout=30, what="3 replicas for a backlog of 5")
            assert _count("processors") > from_processors
            assert _count("index") == from_index  # the processor answered every time

            # The processor goes away: the operator reads the table itself, and still scales.
            proc.send_signal(signal.SIGKILL)
            await proc.wait()

            async def fell_back() -> bool:
                return _count("index") > from_index

            await eventually(fell_back, timeout=30, what="readings from the status index")
            async with Store.open(settings=settings) as store:
                for i in range(5):
                    await store.requests.cancel(request_key("t", f"r{i}"), tenant_id="t")
            await eventually(lambda: replicas(0), timeout=30, what="zero replicas once idle")
