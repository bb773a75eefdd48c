"""``streamer dev`` as a user runs it: the ready line, requests through it, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import aiohttp
from e2e_helpers import Dev, echo, eventually

from streamer.client import StreamerClient


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
