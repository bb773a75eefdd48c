"""`streamer operator` itself: flags, settings, health endpoints, and it reconciles."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import aiohttp
import pytest
from metricslib import scrape
from operator_harness import Api, Cluster, eventually, handler_body
from streamer_operator import children
from streamer_operator.main import run
from streamer_operator.options import load_options

from streamer.local.ports import free_port


@contextlib.asynccontextmanager
async def running_operator(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, **env: str
) -> AsyncIterator[tuple[int, threading.Event]]:
    """`streamer operator` in a thread against the kmock cluster, health on a free port:
    yields (port, kopf's ready flag); stops it on the way out and checks it exited 0."""
    port = free_port()
    monkeypatch.setenv("STREAMER_HOST", "127.0.0.1")
    monkeypatch.setenv("STREAMER_HTTP_PORT", str(port))
    monkeypatch.setenv("STREAMER_OPERATOR_MANAGE_TABLES", "false")
    monkeypatch.setenv("STREAMER_LOG_JSON", "false")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stop, ready = threading.Event(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run(["--server", str(cluster.url).rstrip("/")], stop_flag=stop, ready_flag=ready)
        )
    )
    thread.start()
    try:
        yield port, ready
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    assert result == [0]


async def test_run_serves_health_and_reconciles(
    cluster: Cluster, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_operator(cluster, monkeypatch) as (port, ready):
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(healthy, what="/readyz")
            assert "streamer_operator_reconciles_total" in await scrape(port, session=session)
        await eventually(lambda: asyncio.to_thread(ready.is_set), what="kopf ready")
        await asyncio.sleep(0.3)
        await api.create(children.HANDLERS, handler_body("viamain", actions=["viamain.a"]))

        async def deployed() -> bool:
            return await api.get(children.DEPLOYMENTS, "default", "viamain") is not None

        await eventually(deployed, what="the Deployment made by `streamer operator`")


def test_a_bad_setting_stops_the_operator_with_its_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_OPERATOR_RESYNC_SECONDS", "soon")
    assert run([]) == 2
    assert "STREAMER_OPERATOR_RESYNC_SECONDS" in capsys.readouterr().err


def test_options_defaults_and_parsing() -> None:
    defaults = load_options({})
    assert defaults.resync_seconds == 60.0 and defaults.manage_tables is True
    custom = load_options({"STREAMER_OPERATOR_RESYNC_SECONDS": "5", "STREAMER_OPERATOR_MANAGE_TABLES": "off"})
    assert custom.resync_seconds == 5.0 and custom.manage_tables is False
    with pytest.raises(ValueError, match="STREAMER_OPERATOR_MANAGE_TABLES"):
        load_options({"STREAMER_OPERATOR_MANAGE_TABLES": "maybe"})
    with pytest.raises(ValueError, match="greater than 0"):
        load_options({"STREAMER_OPERATOR_TABLES_RETRY_SECONDS": "0"})


async def test_two_replicas_with_peering_one_object_both_peers_and_the_work_done(
    cluster: Cluster, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kmock

    cluster.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        kind="ClusterKopfPeering",
        singular="clusterkopfpeering",
        namespaced=False,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )
    monkeypatch.setenv("STREAMER_HOST", "127.0.0.1")
    monkeypatch.setenv("STREAMER_HTTP_PORT", "0")
    monkeypatch.setenv("STREAMER_OPERATOR_MANAGE_TABLES", "false")
    monkeypatch.setenv("STREAMER_LOG_JSON", "false")
    monkeypatch.setenv("STREAMER_OPERATOR_PEERING", "streamer")
    server = str(cluster.url).rstrip("/")
    stops = [threading.Event(), threading.Event()]
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(run(["--server", server], stop_flag=s)))
        for s in stops
    ]
    for thread in threads:
        thread.start()
    try:

        async def both_peers() -> bool:
            # Created by the operator itself; each replica writes its heartbeat into status.
            status, peering = await api._call("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/streamer")
            return status == 200 and len((peering or {}).get("status") or {}) >= 2

        await eventually(both_peers, timeout=30, what="two peers in the KopfPeering")
        await asyncio.sleep(0.5)
        await api.create(children.HANDLERS, handler_body("peered", actions=["peered.a"]))

        async def deployed() -> bool:
            return await api.get(children.DEPLOYMENTS, "default", "peered") is not None

        await eventually(deployed, timeout=30, what="the Deployment made by the active replica")
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
    assert results == [0, 0]


@pytest.mark.parametrize("hangs", [False, True], ids=["refused", "hung"])
async def test_healthz_fails_while_the_watches_get_no_answer_and_recovers(
    cluster: Cluster, api: Api, monkeypatch: pytest.MonkeyPatch, hangs: bool
) -> None:
    async with running_operator(cluster, monkeypatch, STREAMER_OPERATOR_WATCH_STALE_SECONDS="1") as (
        port,
        ready,
    ):
        async with aiohttp.ClientSession() as session:

            async def healthz() -> tuple[int, dict[str, str]]:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        return resp.status, await resp.json()
                except aiohttp.ClientError:
                    return 0, {}

            async def alive() -> bool:
                return (await healthz())[0] == 200

            async def dead() -> dict[str, str] | None:
                status, body = await healthz()
                return body if status == 503 else None

            await eventually(lambda: asyncio.to_thread(ready.is_set), what="kopf ready")
            await eventually(alive, what="/healthz 200")
            # Every watch stream ends and the API server answers 500 to each new one
            # (kopf retries with its back-offs), or never answers at all (kopf waits for
            # its client timeout): /healthz names the watch that is dead.
            cluster.start_watch_outage(hangs=hangs)
            body = await eventually(dead, timeout=30, what="/healthz 503 during the outage")
            assert "watch of" in body["reason"], body
            # Still within kopf's retries (about a minute): its next attempt is answered
            # (or the hung one is, at last).
            cluster.end_watch_outage()
            await eventually(alive, timeout=30, what="/healthz 200 after the outage")
        # And the watches do work again: a new handler is reconciled.
        await api.create(children.HANDLERS, handler_body("afterwards", actions=["afterwards.a"]))

        async def deployed() -> bool:
            return await api.get(children.DEPLOYMENTS, "default", "afterwards") is not None

        await eventually(deployed, timeout=30, what="a Deployment after the outage")
