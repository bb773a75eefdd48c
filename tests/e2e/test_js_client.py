"""The TypeScript client (clients/js) against the real local stack, with Node's test runner.

The Node tests (clients/js/test/*.test.mjs) import the built ES module (clients/js/dist,
proven fresh by tests/unit/clients/test_js_client_build.py) and talk to this module's stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import re
import shutil
import signal
from collections.abc import AsyncIterator

import pytest
from e2e_helpers import running_stack

from streamer.local.stack import LocalStack

ROOT = pathlib.Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"


def node() -> str:
    found = shutil.which("node")
    assert found, "node is needed (>= 20); make setup installs what the JS client needs"
    return found


@pytest.fixture(scope="module")
async def stack(dynamodb: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    """Two connects: the drain test takes the second out (the other tests use the first).

    A reconnect rate of 10 sockets/s spreads the drained test's 20 clients over 2 s; a 5 s
    drain leaves time to close every socket with its 1001 even on a loaded machine.
    """
    env = {"STREAMER_WS_RECONNECT_RATE": "10", "STREAMER_DRAIN_SECONDS": "5"}
    async with running_stack(dynamodb, tmp_path_factory.mktemp("stack"), env=env, connects=2) as st:
        yield st


async def run_node(tests: list[str], env: dict[str, str]) -> str:
    """``node --test`` over ``tests`` (paths under clients/js); fails the test unless every one passed."""
    proc = await asyncio.create_subprocess_exec(
        node(),
        "--experimental-websocket",
        "--test",
        "--test-reporter=spec",
        "--test-timeout=60000",
        *tests,
        cwd=JS,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: the runner and its test processes
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=150)
    finally:  # a timeout (or pytest's) must not leave node running
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        pytest.fail(f"node --test failed ({proc.returncode}):\n{text}")
    assert re.search(r"^\S* ?(# )?fail 0$", text, re.MULTILINE), text
    assert not re.search(r"^\S* ?(# )?pass 0$", text, re.MULTILINE), text
    assert re.search(r"^\S* ?(# )?skipped 0$", text, re.MULTILINE), text
    return text


async def test_the_js_client_passes_its_node_tests_against_the_stack(stack: LocalStack) -> None:
    assert stack.jwt_secret
    tests = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.mjs"))
    assert tests
    await run_node(tests, {"STREAMER_URL": stack.ws_url, "STREAMER_JWT_SECRET": stack.jwt_secret})


async def test_the_js_client_honours_the_drain_hint(stack: LocalStack) -> None:
    """clients/js/test/drain.stack.mjs: SIGTERM the second connect under 20 Node clients."""
    assert stack.jwt_secret
    drained = stack.service("connect-2")
    assert drained.process is not None
    first, second = stack.ws_urls
    env = {
        "STREAMER_URL": second,
        "STREAMER_URLS": f"{second},{first}",
        "STREAMER_DRAIN_PID": str(drained.process.pid),
        "STREAMER_JWT_SECRET": stack.jwt_secret,
    }
    text = await run_node(["test/drain.stack.mjs"], env)
    print(next(line for line in text.splitlines() if "hints " in line))
