"""``make demo``: start the whole product on this machine, use it, stop it.

Starts a :class:`~streamer.local.stack.LocalStack` on a free port (DynamoDB Local, the
tables, connect, router, processor and the example handlers, each its own process),
then runs a short scripted session with the Python client SDK and the ``streamer
request`` command:

1. a sync ``echo``;
2. an async ``generate_report``, its progress shown as it arrives;
3. a ``generate_report`` with an impossible date, refused with ``VALIDATION_ERROR``;
4. ``$status`` of the finished report (answered from DynamoDB);
5. the same echo through ``streamer request``, as you would type it;
6. the demo page of ``streamer dev`` answers (the page and the TypeScript client).

Every step checks what it got; the exit status is 0 only when all behaved, and the
stack is stopped (no process left) either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from streamer.client import Progress, StreamerClient, ValidationError
from streamer.local.dynamodb import DynamoDBLocalError
from streamer.local.page import DemoPage
from streamer.local.stack import LocalStack, StackError

REPORT = {"start_date": "2026-01-01", "end_date": "2026-03-31", "format": "pdf", "report_type": "sales"}


def say(text: str = "") -> None:
    print(text, flush=True)


def show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class Session:
    def __init__(self, stack: LocalStack, client: StreamerClient) -> None:
        self.stack = stack
        self.client = client
        self.failures: list[str] = []
        self.report_id = ""

    async def step(self, number: int, title: str, body: Callable[[], Awaitable[None]]) -> None:
        say(f"\n[{number}] {title}")
        try:
            await body()
        except Exception as exc:
            self.failures.append(f"step {number} ({title}): {type(exc).__name__}: {exc}")
            say(f"    FAILED: {type(exc).__name__}: {exc}")
        else:
            say("    ok")

    async def sync_echo(self) -> None:
        say('    -> echo {"message": "Hello, Streamer!"}')
        result = await self.client.request("echo", {"message": "Hello, Streamer!"}, timeout=30)
        say(f"    <- response {show(result)}")
        assert result.get("message") == "Hello, Streamer!", "echo did not echo"

    async def async_report(self) -> None:
        say(f"    -> generate_report {show(REPORT)}")
        seen: list[float] = []

        def on_progress(p: Progress) -> None:
            seen.append(p.percentage)
            filled = int(p.percentage // 5)
            say(f"    <- progress [{'#' * filled}{'.' * (20 - filled)}] {p.percentage:3.0f}%  {p.message}")

        handle = await self.client.start("generate_report", REPORT, on_progress=on_progress)
        self.report_id = handle.request_id
        result = await handle.result(timeout=120)
        ack = next((m for m in handle.messages if m.get("type") == "acknowledgment"), None)
        say(f"    <- complete {show(result)}")
        assert ack is not None, "no acknowledgment: the request did not go async"
        assert seen and seen[-1] == 100, f"progress did not reach 100% ({seen})"
        assert seen == sorted(seen), f"progress went backwards ({seen})"
        assert result.get("report_type") == "sales" and result.get("days") == 90, "unexpected report"

    async def validation_error(self) -> None:
        bad = {**REPORT, "start_date": "2026-02-30"}
        say(f"    -> generate_report {show(bad)}")
        try:
            await self.client.request("generate_report", bad, timeout=30)
        except ValidationError as exc:
            say(f"    <- error {exc.code}: {exc.message}")
            if exc.details:
                say(f"       details {show(exc.details)}")
            return
        raise AssertionError("a report for February 30th was accepted")

    async def status(self) -> None:
        say(f'    -> $status {{"request_id": "{self.report_id}"}}')
        status = await self.client.status(self.report_id)
        say(f"    <- status {status['status']} {status['percentage']}% (attempt {status.get('attempt')})")
        assert status["status"] == "COMPLETED", f"status is {status['status']}"

    async def cli(self) -> None:
        cmd = ["streamer", "request", "echo", "--payload", '{"message": "from the command line"}']
        say(f"    $ {' '.join(cmd[:4])} '{cmd[4]}' --url {self.stack.ws_url}")
        env = {**os.environ, "STREAMER_URL": self.stack.ws_url}
        if self.stack.jwt_secret:
            env["STREAMER_JWT_SECRET"] = self.stack.jwt_secret
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamer.cli.main",
            *cmd[1:],
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        for line in out.decode().splitlines():
            say(f"    {line}")
        say(f"    (exit status {proc.returncode})")
        assert proc.returncode == 0, f"exit status {proc.returncode}: {err.decode().strip()}"
        assert json.loads(out)["message"] == "from the command line"

    async def page(self) -> None:
        page = DemoPage(ws_urls=self.stack.ws_urls, registry_file=self.stack.registry_file, token_maker=None)
        url = await page.start()
        try:
            async with aiohttp.ClientSession() as http:
                for path in ("", "client/index.js"):
                    async with http.get(url + path) as resp:
                        assert resp.status == 200, f"{url}{path}: HTTP {resp.status}"
                        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            say(f"    <- {url} serves the page and the TypeScript client (docs/client-js.md)")
            say("    In a browser: `make dev` (or .venv/bin/streamer dev) prints `Demo page: http://...`;")
            say("    open it to send requests and watch their progress bars, cancel them, follow them.")
        finally:
            await page.stop()


async def main() -> int:
    say("Streamer demo: the whole product on this machine, every service its own process.")
    say("Starting DynamoDB Local, the tables, connect, router, processor and the example handlers...")
    started = time.monotonic()
    stack = LocalStack()
    try:
        await stack.start()
    except (StackError, DynamoDBLocalError) as exc:
        say(f"Could not start the local stack: {exc}")
        return 1
    failures: list[str] = []
    try:
        say(f"Streamer is ready: {stack.ws_url}  (started in {time.monotonic() - started:.1f}s)")
        say(f"Service logs: {stack.run_dir / 'logs' if stack.run_dir else '-'}")
        token = stack.token(user="demo-user", tenant="demo-tenant")
        async with StreamerClient(stack.ws_url, token=token) as client:
            session = Session(stack, client)
            await session.step(1, "A sync request: echo", session.sync_echo)
            await session.step(
                2, "An async request: generate_report, with live progress", session.async_report
            )
            await session.step(
                3, "A validation error: generate_report with an impossible date", session.validation_error
            )
            await session.step(4, "Its status, asked later: $status", session.status)
            await session.step(5, "The same from the command line: streamer request", session.cli)
            await session.step(6, "The same from a browser: the demo page of streamer dev", session.page)
            failures = session.failures
    except Exception as exc:
        failures.append(f"session: {type(exc).__name__}: {exc}")
    finally:
        say("\nStopping every process...")
        await stack.stop()
        alive = [name for name, s in stack.services.items() if s.running]
        if alive:
            failures.append(f"still running after stop: {alive}")
    if failures:
        say("\nThe demo FAILED:")
        for failure in failures:
            say(f"  - {failure}")
        if stack.run_dir is not None:
            say(f"Logs: {stack.run_dir / 'logs'}")
        return 1
    stack.remove_run_dir()
    say("Stopped. The demo passed: sync, async with progress, and a validation error all behaved.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
