"""A throw-away real Prometheus for tests: scrapes given /metrics, evaluates the chart's rules,
answers the dashboards' queries.

The binary is Debian's ``prometheus`` (scripts/install-prometheus.sh); a missing binary fails
the test. It listens on a free 127.0.0.1 port, keeps its data in a temp dir and is stopped
(and waited for) on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "charts" / "streamer" / "dashboards").glob("*.json"))
RULES = ROOT / "charts" / "streamer" / "rules" / "streamer.rules.yaml"
NAMESPACE = "streamer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rules_for(namespace: str) -> str:
    """The chart's rules as the chart renders them for ``namespace``."""
    return (
        RULES.read_text().replace("__NAMESPACE__", namespace).replace("__RUNBOOK_BASE__", "docs/runbooks.md")
    )


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; raises on a query error (bad PromQL), returns the result list."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/api/v1/query", data={"query": expr}) as resp,
        ):
            body = json.loads(await resp.text())
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {body.get('error')}: {expr}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def targets_up(self) -> dict[str, bool]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/api/v1/targets") as resp:
            body = await resp.json()
        return {t["labels"]["job"]: t["health"] == "up" for t in body["data"]["activeTargets"]}


@contextlib.asynccontextmanager
async def running_prometheus(
    tmp: pathlib.Path, jobs: Mapping[str, Sequence[str]], *, namespace: str = NAMESPACE
) -> AsyncIterator[Prometheus]:
    """Prometheus scraping ``jobs`` (job → host:port targets) every second, with the chart's
    rules evaluated every second; every series gets ``namespace``."""
    binary = shutil.which("prometheus")
    if not binary:
        pytest.fail("prometheus is missing: run `make setup` (scripts/install-prometheus.sh)", pytrace=False)
    (tmp / "streamer.rules.yaml").write_text(rules_for(namespace))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "streamer.rules.yaml")],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": list(targets), "labels": {"namespace": namespace}}],
            }
            for job, targets in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"prometheus exited: {(tmp / 'prometheus.log').read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as session, session.get(f"{prom.url}/-/ready") as resp:
                    if resp.status == 200:
                        break
            if loop.time() > deadline:
                raise AssertionError("prometheus did not get ready within 60 s")
            await asyncio.sleep(0.2)
        yield prom
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


def panel_queries(
    variables: Mapping[str, str], rate_interval: str = "30s"
) -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, legend or refId, PromQL) of every panel target, with the
    dashboard variables replaced."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets") or []:
                expr = target["expr"].replace("$__rate_interval", rate_interval)
                expr = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], expr)
                out.append((path.name, panel["title"], target.get("legendFormat") or target["refId"], expr))
    return out
