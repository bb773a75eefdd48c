"""The operator's dashboard on a real Prometheus scraping a real (in-process) operator.

The operator runs on the Kubernetes emulator (as in the other operator tests) and serves its
metrics with the same ``streamer.metrics`` HTTP side its pod serves; Prometheus (Debian's
package) scrapes it every second. With one handler Ready and one not, every query of
``streamer-operator.json`` must return data, and the chart's StreamerHandlerNotReady input
(``streamer_operator_handler_ready == 0``) names the one that is not.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

from operator_harness import Harness, eventually, handler_body

from streamer.metrics import Health, start_http

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from promlib import NAMESPACE, panel_queries, running_prometheus


async def test_the_operator_dashboard_has_data(operator: Harness, tmp_path: pathlib.Path) -> None:
    runner, port = await start_http(health=Health(), host="127.0.0.1", port=0)
    try:
        async with running_prometheus(tmp_path, {"operator": [f"127.0.0.1:{port}"]}) as prom:
            await operator.create(handler_body("ready", actions=["prom.ready"]))
            await operator.create(handler_body("stuck", actions=["prom.stuck"]))
            await operator.make_available("ready", ready=1)
            await operator.wait_condition("ready", "Ready", "True")
            await operator.wait_condition("stuck", "Ready", "False")

            async def scraped() -> bool:
                return bool(await prom.query('streamer_operator_handler_ready{handler="default/stuck"} == 0'))

            await eventually(scraped, timeout=60, what="the not-Ready handler scraped")
            await asyncio.sleep(3)  # two scrapes inside every rate window
            queries = [
                q
                for q in panel_queries({"namespace": NAMESPACE, "action": ".*"})
                if q[0] == "streamer-operator.json"
            ]
            assert len(queries) >= 6
            empty = [
                f"{title} [{legend}]: {expr}"
                for _, title, legend, expr in queries
                if not await prom.query(expr)
            ]
            assert not empty, "operator panels without data:\n" + "\n".join(empty)
            not_ready = await prom.query(f'streamer_operator_handler_ready{{namespace="{NAMESPACE}"}} == 0')
            names = {r["metric"]["handler"] for r in not_ready}  # (earlier tests' handlers may be there too)
            assert "default/stuck" in names and "default/ready" not in names
    finally:
        await runner.cleanup()
