"""``python -m services.processor`` as its own process: file registry, real Delivery, SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import yaml
from metricslib import scrape
from processor_helpers import Env, processor_process

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
    async with processor_process(env.settings, registry_file, worker_id="w-subprocess") as child:
        port, proc = child.http_port, child.proc
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
