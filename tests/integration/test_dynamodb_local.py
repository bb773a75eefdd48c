"""DynamoDB Local as a child process: it starts, answers, and never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = """
import asyncio
from streamer.local.dynamodb import DynamoDBLocal
db = DynamoDBLocal()
asyncio.run(db.start())
print(db.process.pid, flush=True)
import time
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_dynamodb_local_dies_with_a_killed_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        jvm = int(parent.stdout.readline())
        assert _alive(jvm)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while _alive(jvm) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(jvm), "DynamoDB Local outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
        with_jvm = locals().get("jvm")
        if isinstance(with_jvm, int) and _alive(with_jvm):
            os.kill(with_jvm, signal.SIGKILL)
