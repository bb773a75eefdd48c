"""Two operator replicas with kopf peering: exactly one reconciles; when it goes, the other takes over.

Each replica is the real operator (``build``) on its own kopf thread, peered through a
ClusterKopfPeering on the emulator with a fixed priority; the test counts the reconciles of
each replica's own Reconciler. kmock has no leases or clocks of its own: kopf's peering is
all in the KopfPeering object's status, which the emulator stores and streams like any other.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
from operator_harness import Api, Cluster, eventually, handler_body, run_operator
from streamer_operator import children
from streamer_operator.kube import Kube
from streamer_operator.main import ensure_peering
from streamer_operator.options import OperatorOptions

PEERING = "streamer"


def _count_reconciles(harness: Any) -> list[str]:
    """Wrap the replica's reconciler; returns the list it appends each reconciled name to."""
    seen: list[str] = []
    reconciler = harness.reconciler
    original = reconciler.reconcile

    async def reconcile(key: tuple[str, str], **kw: Any) -> Any:
        seen.append(key[1])
        return await original(key, **kw)

    reconciler.reconcile = reconcile
    return seen


async def test_only_the_higher_priority_replica_works_and_the_other_takes_over(
    cluster: Cluster, api: Api
) -> None:
    cluster.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        kind="ClusterKopfPeering",
        singular="clusterkopfpeering",
        namespaced=False,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )
    from kubernetes import client as k8s

    configuration = k8s.Configuration()
    configuration.host = str(cluster.url).rstrip("/")
    with k8s.ApiClient(configuration) as api_client:
        await asyncio.to_thread(ensure_peering, Kube(api_client), PEERING, [])
    options = OperatorOptions(resync_seconds=0.5, manage_tables=False)

    async def peers() -> int:
        status, peering = await api._call("GET", f"/apis/kopf.dev/v1/clusterkopfpeerings/{PEERING}")
        return len((peering or {}).get("status") or {}) if status == 200 else 0

    async with run_operator(
        cluster, api, options=options, kopf_args=["--peering", PEERING, "--priority", "200"]
    ) as active:
        active_seen = _count_reconciles(active)
        await eventually(lambda: _at_least(peers, 1), what="the first replica in the peering")
        async with run_operator(
            cluster,
            api,
            options=options,
            kopf_args=["--peering", PEERING, "--priority", "100"],
            wait_watching=False,
        ) as standby:
            standby_seen = _count_reconciles(standby)
            await eventually(lambda: _at_least(peers, 2), what="both replicas in the peering")
            await asyncio.sleep(1.0)  # the standby has seen the higher priority and paused

            await api.create(children.HANDLERS, handler_body("one", actions=["one.a"]))
            await active.wait_child(children.DEPLOYMENTS, "one")
            await asyncio.sleep(2.0)  # several resync rounds (0.5 s) of both replicas
            assert "one" in active_seen
            assert standby_seen == [], "the paused replica reconciled"

            # The active replica stops (leaving the peering); the standby resumes.
            watches_before = _handler_watches(cluster)
            await asyncio.to_thread(active.runner.__exit__, None, None, None)
            reconciled_before = len(active_seen)

            async def took_over() -> bool:
                return "one" in standby_seen and _handler_watches(cluster) > watches_before

            await eventually(took_over, timeout=30, what="the standby resuming and watching")
            await asyncio.sleep(0.3)  # kmock subscribes a watch after its initial snapshot
            await api.create(children.HANDLERS, handler_body("two", actions=["two.a"]))
            await standby.wait_child(children.DEPLOYMENTS, "two")
            assert "two" in standby_seen
            assert len(active_seen) == reconciled_before  # the stopped one did nothing more


def _handler_watches(cluster: Cluster) -> int:
    return sum(
        1
        for r in list(cluster)
        if r.action == kmock.action.WATCH and r.resource is not None and r.resource.plural == children.PLURAL
    )


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)
