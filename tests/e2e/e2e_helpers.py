"""Helpers of the end-to-end tests (imported by conftest and the test modules)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from metricslib import scrape

from streamer.client import StreamerClient
from streamer.local.devauth import dev_token
from streamer.local.stack import LocalStack

#: Settings of every e2e stack: fast recovery, no coalescing, no rate limit, quick steps.
E2E_ENV: dict[str, str] = {
    "STREAMER_SWEEP_INTERVAL_SECONDS": "0.5",
    "STREAMER_CLAIM_SECONDS": "3",
    "STREAMER_LEASE_SECONDS": "3",
    "STREAMER_PENDING_GRACE_SECONDS": "1",
    "STREAMER_PROGRESS_INTERVAL_SECONDS": "0",
    "STREAMER_EXAMPLES_STEP_SECONDS": "0.05",
    "STREAMER_WS_RATE_LIMIT": "0",
    "STREAMER_DRAIN_SECONDS": "1",
}


@contextlib.asynccontextmanager
async def running_stack(
    dynamodb: str, run_dir: Any, env: Mapping[str, str] | None = None, **kw: Any
) -> AsyncIterator[LocalStack]:
    stack = LocalStack(
        dynamodb_endpoint=dynamodb,
        table_prefix=f"e2e{uuid.uuid4().hex[:8]}",
        env={**E2E_ENV, **(env or {})},
        run_dir=run_dir,
        ready_timeout=90,
        **kw,
    )
    await stack.start()
    try:
        yield stack
    finally:
        pids = [s.pid for s in stack.services.values() if s.pid]
        await stack.stop()
        # Stopping leaves nothing behind.
        assert not [pid for pid in pids if _alive(pid)], "a service outlived stack.stop()"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def connect(stack: LocalStack, *, user: str = "alice", tenant: str = "acme", **kw: Any) -> StreamerClient:
    """A client of ``stack`` with a token for user/tenant."""
    kw.setdefault("reconnect_delay", 0.05)
    return StreamerClient(stack.ws_url, token=stack.token(user=user, tenant=tenant), **kw)


class Recorder:
    """Every raw server message a client received (the SDK drops replays; this does not)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def __call__(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)

    def of(self, request_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        mine = [m for m in self.messages if m.get("request_id") == request_id]
        return [m for m in mine if kind is None or m.get("type") == kind]


async def handler_invocations(stack: LocalStack, action: str) -> dict[str, float]:
    """``streamer_handler_invocations_total`` of one action, by outcome, from the handler's /metrics."""
    metrics = await scrape(stack.service("handler").http_port)
    return metrics.by("streamer_handler_invocations_total", "outcome", action=action)


async def eventually(check: Any, *, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``check()`` (sync or async) until it returns a truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- `streamer dev` as a process
READY = re.compile(r"^Streamer is ready: (ws://127\.0\.0\.1:(\d+)/ws)$")
PAGE = re.compile(r"^Demo page: (http://127\.0\.0\.1:\d+/)$")


class Dev:
    """One ``streamer dev`` process."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.page_url = ""
        self.stdout_lines: list[str] = []

    async def start(self) -> Dev:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
        env["STREAMER_DRAIN_SECONDS"] = "1"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamer.cli.main",
            "dev",
            "--port",
            "0",
            *self.args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await self._read_ready()
        except BaseException:
            self.kill_now()  # a stack that did not start as expected must not outlive the test
            raise
        return self

    async def _read_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout=100)).decode().rstrip("\n")
        self.stdout_lines.append(line)
        match = READY.match(line)
        if match is None:
            err = await self._stderr()
            raise AssertionError(f"expected the ready line, got {line!r}; stderr:\n{err}")
        self.url = match.group(1)
        if "--no-page" not in self.args:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)).decode().rstrip("\n")
            self.stdout_lines.append(line)
            page = PAGE.match(line)
            assert page is not None, f"expected the demo page line after the ready line, got {line!r}"
            self.page_url = page.group(1)

    async def _stderr(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            return (await asyncio.wait_for(self.proc.stderr.read(), timeout=20)).decode()
        except TimeoutError:
            return "(stderr still open)"

    async def finish(self, sig: int) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.send_signal(sig)
        rest = (await asyncio.wait_for(self.proc.stdout.read(), timeout=60)).decode()
        self.stdout_lines += rest.splitlines()
        return await asyncio.wait_for(self.proc.wait(), timeout=60)

    def kill_now(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


async def echo(url: str, message: str) -> str:
    async with StreamerClient(url, token=dev_token(user="u", tenant="t")) as client:
        result = await client.request("echo", {"message": message}, timeout=30)
    return str(result["message"])
