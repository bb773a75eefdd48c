"""Every dashboard panel's query returns data on a real Prometheus scraping the local stack.

A real Prometheus (Debian's package) scrapes every service of the stack — connect, router,
processor and the example handler — every second and evaluates the chart's rules (so the SLO
recording rules feed the overview). After a short load (sync and async requests with
progress, refused tokens, a malformed frame, a validation error, a publish), each target of
each generated dashboard (charts/streamer/dashboards/) is run as an instant query: it must not
fail, and it must return data — except for the few listed in ``EMPTY_HERE`` with why.
The operator's dashboard is checked in tests/operator/test_operator_prometheus.py, against
an operator running on the Kubernetes emulator.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

import aiohttp
import pytest
from e2e_helpers import connect, eventually

from streamer.backend import AsyncBackend
from streamer.client import ValidationError
from streamer.local.stack import LocalStack

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from promlib import NAMESPACE, panel_queries, running_prometheus

#: (dashboard file, panel title, legend) that legitimately return nothing on a healthy local
#: stack under this load. Keep it short: every entry is a panel nobody has tested for real.
EMPTY_HERE = {
    # The local stack checks HS256 tokens; JWKS fetches happen only with STREAMER_JWKS_URL(S).
    ("streamer-connect.json", "JWKS fetches", "{{result}}"),
    # Only a full send queue (a client too slow to read) or a dying socket count here.
    ("streamer-connect.json", "Send failures and rejected frames", "send failed: {{reason}}"),
    # Recoveries need a crashed processor or a stream record nobody took (tests/chaos does that).
    ("streamer-processor.json", "Sweeper recoveries", "{{kind}}"),
}
REPORT = {"start_date": "2026-01-01", "end_date": "2026-01-31", "format": "csv", "report_type": "sales"}


async def load(stack: LocalStack) -> None:
    """A bit of everything the dashboards show."""
    async with connect(stack) as alice, connect(stack, user="bob") as bob:
        for _ in range(5):
            await alice.request("echo", {"message": "hi"}, timeout=30)
            await bob.request("ping", {}, timeout=30)
        handles = [await alice.start("generate_report", REPORT) for _ in range(3)]
        handles += [await bob.start("echo_async", {"message": "m", "timestamp": 1}) for _ in range(3)]
        for handle in handles:
            await handle.result(timeout=90)
        with pytest.raises(ValidationError):
            await alice.request("echo", {"unexpected": 1}, timeout=30)
        async with AsyncBackend(stack.service("router").grpc_address, settings=stack.settings) as backend:
            await backend.publish({"type": "notice", "text": "hello"}, to_user="alice", tenant="acme")
    async with aiohttp.ClientSession() as session:
        # a refused token, and a frame that is not JSON
        async with session.get(stack.ws_url, headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status in (401, 403)
        token = stack.token(user="carol", tenant="acme")
        async with session.ws_connect(stack.ws_url, headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send_str("{not json")
            await ws.receive(timeout=30)


@pytest.mark.timeout(300)
async def test_every_dashboard_panel_has_data(stack: LocalStack, tmp_path: pathlib.Path) -> None:
    jobs = {name: [f"127.0.0.1:{svc.http_port}"] for name, svc in stack.services.items()}
    assert {"connect", "router", "processor", "handler"} <= set(jobs)
    async with running_prometheus(tmp_path, jobs) as prom:
        await eventually(lambda: _all_up(prom, set(jobs)), timeout=60, interval=0.5)
        await load(stack)
        # let every rate window see two scrapes after the load, and the rules run on them
        await asyncio.sleep(5)
        variables = {"namespace": NAMESPACE, "action": ".*", "datasource": "prometheus"}
        queries = panel_queries(variables)
        assert len(queries) >= 60
        empty = []
        for board, title, legend, expr in queries:
            if board == "streamer-operator.json":
                continue  # no operator in the local stack: tests/operator checks this one
            result = await prom.query(expr)  # raises on a query error
            if not result and (board, title, legend) not in EMPTY_HERE:
                empty.append(f"{board}: {title} [{legend}]: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
        # the exceptions are real exceptions: they stay valid queries
        for board, title, legend in EMPTY_HERE:
            assert any(q[:3] == (board, title, legend) for q in queries), f"stale entry {board}: {title}"


async def _all_up(prom: object, jobs: set[str]) -> bool:
    up = await prom.targets_up()  # type: ignore[attr-defined]
    return set(up) >= jobs and all(up[j] for j in jobs)
