"""``python -m services.processor`` as its own process: file registry, real Delivery, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import aiohttp
import yaml
from metricslib import scrape
from processor_helpers import Env, wait_until

from streamer.registry.static import StaticRegistry
from streamer.store import COMPLETED


async def test_streamer_processor_serves_then_drains_on_sigterm(env: Env, tmp_path: Any) -> None:
    registry_file = tmp_path / "registry.yaml"
    registry = env.registry
    assert isinstance(registry, StaticRegistry)
    docs = [
        {
            "apiVersion": "streamer.dev/v1alpha1",
            "kind": "StreamerHandler",
            "metadata": {"name": "proc-main"},
            "spec": {"actions": [{"name": "p_fast", "mode": "async", "timeout": "5s"}]},
            "status": {"endpoint": registry.lookup("p_fast").endpoint},  # type: ignore[union-attr]
        }
    ]
    registry_file.write_text(yaml.safe_dump_all(docs))
    s = env.settings
    child_env = {
        **os.environ,
        "STREAMER_DYNAMODB_ENDPOINT": s.dynamodb_endpoint or "",
        "STREAMER_TABLE_PREFIX": s.table_prefix,
        "STREAMER_HOST": "127.0.0.1",
        "STREAMER_LEASE_SECONDS": "2",
        "STREAMER_CLAIM_SECONDS": "2",
        "STREAMER_SWEEP_INTERVAL_SECONDS": "0.5",
        "STREAMER_DRAIN_SECONDS": "2",
        "STREAMER_WORKER_ID": "w-subprocess",
        "STREAMER_LOG_JSON": "true",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.processor",
        "--registry",
        str(registry_file),
        "--http-port",
        "0",
        env=child_env,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[dict[str, Any]] = []

    async def read_logs() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            try:
                lines.append(json.loads(raw))
            except ValueError:
                pass

    reader = asyncio.create_task(read_logs())
    try:
        await wait_until(
            lambda: any(line.get("message") == "processor started" for line in lines),
            timeout=20,
            what="the processor to start",
        )
        port = next(line["http_port"] for line in lines if "http_port" in line)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200
            assert "streamer_processor_leases_held" in await scrape(port, session=http)

        conn = await env.connection()
        req = await env.submit("p_fast", {"via": "subprocess"}, connection_id=conn)
        done = await env.settled(req.request_id)
        assert done.status == COMPLETED and done.owner == "w-subprocess"
        assert [e["type"] for e in await env.endings(conn, req.request_id)] == ["complete"]

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        leases = await env.store.leases.all()
        assert [lease.owner for lease in leases] == [None], "leases released on the way out"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
