"""The parent side of the process protocol, and what the harness reads about processes.

:class:`Child` starts ``python -m <module>`` with the repository on the path, reads
its JSON-line events and writes commands; its stderr goes to a log file under
``bench/results/logs`` so a failing child can be diagnosed after the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import sys
from collections.abc import Iterable, Mapping
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
#: Where results, logs, stack run directories and profiles go (``BENCH_RESULTS_DIR`` overrides).
RESULTS = pathlib.Path(os.environ.get("BENCH_RESULTS_DIR") or REPO / "bench" / "results")
LOGS = RESULTS / "logs"


class ChildError(RuntimeError):
    """A child process died or did not answer in time."""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment children get: ours, the repository on the path, quiet logs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("STREAMER_LOG_LEVEL", "WARNING")
    env.update(extra or {})
    return env


class Child:
    """One child process speaking JSON lines (see :mod:`bench.child`)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: pathlib.Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls,
        *,
        name: str,
        module: str,
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Child:
        LOGS.mkdir(parents=True, exist_ok=True)
        log_path = LOGS / f"{name}.log"
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=str(REPO),
                env=child_env(env),
                limit=64 * 1024 * 1024,
            )
        return cls(name, proc, log_path)

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    async def expect(self, event: str, *, timeout: float) -> dict[str, Any]:
        """Read events until one named ``event``; an ``error`` event or EOF raises."""
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ChildError(f"{self.name}: no {event!r} within {timeout:.0f}s\n{self._tail()}")
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except TimeoutError:
                raise ChildError(f"{self.name}: no {event!r} within {timeout:.0f}s\n{self._tail()}") from None
            if not line:
                await self.proc.wait()
                raise ChildError(
                    f"{self.name} exited ({self.proc.returncode}) before {event!r}\n{self._tail()}"
                )
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "error":
                raise ChildError(f"{self.name}: {msg.get('message')}")
            if msg.get("event") == event:
                return msg  # type: ignore[no-any-return]

    async def send(self, cmd: str, **data: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **data}) + "\n").encode())
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Close stdin (children stop on EOF), then SIGTERM, then SIGKILL."""
        try:
            if self.proc.returncode is not None:
                return
            if self.proc.stdin is not None:
                with contextlib.suppress(Exception):
                    self.proc.stdin.close()
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.send_signal(sig)
                try:
                    await asyncio.wait_for(self.proc.wait(), timeout / 2 if sig is None else timeout)
                    return
                except TimeoutError:
                    continue
        finally:
            # Close the pipes now, not when the transport is collected after the loop closed.
            transport = getattr(self.proc, "_transport", None)
            if transport is not None:
                transport.close()


async def stop_all(children: Iterable[Child]) -> None:
    await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ChildError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User+system CPU time ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def children_of(pid: int) -> list[int]:
    """Direct child pids of ``pid`` (for finding a stack's service processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
