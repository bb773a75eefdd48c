"""``streamer dev`` as a user runs it: the ready line, requests through it, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid

import aiohttp
from e2e_helpers import eventually

from streamer.client import StreamerClient
from streamer.local.devauth import dev_token

READY = re.compile(r"^Streamer is ready: (ws://127\.0\.0\.1:(\d+)/ws)$")
PAGE = re.compile(r"^Demo page: (http://127\.0\.0\.1:\d+/)$")


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), whatever session or group it moved to."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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


async def check_the_demo_page(page_url: str, ws_url: str) -> None:
    """The page, the client module and the dev-token endpoint answer (the browser tests do the rest)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(page_url) as resp:
            assert resp.status == 200 and "Streamer demo" in await resp.text()
            assert ws_url in resp.headers["Content-Security-Policy"]
        async with http.get(page_url + "client/index.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
        async with http.post(page_url + "api/token", json={"user": "ann", "tenant": "acme"}) as resp:
            token = (await resp.json())["token"]
    async with StreamerClient(ws_url, token=token) as client:
        result = await client.request("echo", {"message": "page token"}, timeout=30)
    assert result["message"] == "page token"


async def test_dev_prints_one_ready_line_serves_and_stops_cleanly_on_sigterm() -> None:
    dev = await Dev("--table-prefix", f"dev{uuid.uuid4().hex[:6]}").start()  # its own DynamoDB Local
    try:
        assert dev.proc is not None
        family = descendants(dev.proc.pid)
        assert len(family) >= 5  # DynamoDB Local, handler, router, processor, connect
        assert await echo(dev.url, "through streamer dev") == "through streamer dev"
        await check_the_demo_page(dev.page_url, dev.url)
        code = await dev.finish(signal.SIGTERM)
    finally:
        dev.kill_now()
    assert code == 0
    assert len(dev.stdout_lines) == 2  # the ready line, the page's address, nothing else on stdout
    await eventually(lambda: not [pid for pid in family if alive(pid)], timeout=15)


async def test_two_dev_stacks_side_by_side_and_children_die_with_a_killed_launcher(dynamodb: str) -> None:
    first = Dev("--dynamodb-endpoint", dynamodb, "--table-prefix", f"a{uuid.uuid4().hex[:6]}")
    second = Dev("--dynamodb-endpoint", dynamodb, "--table-prefix", f"b{uuid.uuid4().hex[:6]}")
    try:
        # Inside the try: when one fails to start, the other is still stopped.
        await asyncio.gather(first.start(), second.start())
        assert first.url != second.url
        assert await echo(first.url, "one") == "one"
        assert await echo(second.url, "two") == "two"
        assert first.proc is not None and second.proc is not None
        orphans = descendants(first.proc.pid)
        assert len(orphans) >= 4
        # SIGKILL gives the launcher no chance to clean up: the kernel's parent-death
        # signal stops its children.
        first.proc.kill()
        await first.proc.wait()
        await eventually(lambda: not [pid for pid in orphans if alive(pid)], timeout=30)
        # The other stack is unaffected.
        assert await echo(second.url, "still here") == "still here"
        family = descendants(second.proc.pid)
        assert await second.finish(signal.SIGINT) == 0
        await eventually(lambda: not [pid for pid in family if alive(pid)], timeout=15)
    finally:
        first.kill_now()
        second.kill_now()
