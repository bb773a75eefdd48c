"""Idempotent set-up the harness runs first: Redis, the ``bench`` extra, file limits.

- ``redis-server`` (Debian's package) for the peer stack: installed with apt-get when
  missing (as root, or through sudo), then run by the harness on a free port.
- The Python packages of the ``bench`` extra (python-socketio, celery, redis, py-spy,
  pyinstrument, aiodynamo): installed into the running interpreter's environment with the
  project's constraints when one of them cannot be imported.
- RLIMIT_NOFILE raised to the hard limit, so 10k sockets fit (children inherit it).

Each step does nothing when already done, so ``make bench`` can call it every time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

from bench.child import raise_nofile
from bench.procs import REPO

BENCH_MODULES = ("socketio", "celery", "redis", "pyinstrument", "aiodynamo")


class PrepareError(RuntimeError):
    """A prerequisite could not be installed."""


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PrepareError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def ensure_redis() -> str:
    """The path of ``redis-server``, installing Debian's package if needed."""
    found = shutil.which("redis-server")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise PrepareError("redis-server is missing and there is no apt-get: install Redis yourself")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    print("bench: installing redis-server (apt-get)", file=sys.stderr)
    try:
        _run([*sudo, *env_cmd, apt, "install", "-y", "-qq", "redis-server"])
    except PrepareError:
        _run([*sudo, apt, "update", "-qq"])
        _run([*sudo, *env_cmd, apt, "install", "-y", "-qq", "redis-server"])
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if not found:
        raise PrepareError("apt-get installed redis-server but it is not on PATH")
    return found


def missing_modules() -> list[str]:
    return [m for m in BENCH_MODULES if importlib.util.find_spec(m) is None]


def ensure_python_packages() -> None:
    """Install the ``bench`` extra when one of its modules is missing."""
    if not missing_modules():
        return
    print(f"bench: installing the bench extra ({', '.join(missing_modules())} missing)", file=sys.stderr)
    constraints = REPO / "constraints.txt"
    cmd = [sys.executable, "-m", "pip", "install", "-q"]
    if constraints.exists():
        cmd += ["-c", str(constraints)]
    _run([*cmd, "-e", f"{REPO}[bench]"])
    importlib.invalidate_caches()
    still = missing_modules()
    if still:
        raise PrepareError(f"still missing after install: {still}")


def py_spy() -> str | None:
    """The py-spy binary next to this interpreter, or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.path.exists(beside) else shutil.which("py-spy")


def prepare(*, need_peer: bool = True) -> dict[str, object]:
    """Run every step; returns what was found (for the results' meta)."""
    nofile = raise_nofile()
    ensure_python_packages()
    redis = ensure_redis() if need_peer else None
    return {"nofile": nofile, "redis_server": redis, "py_spy": py_spy()}
