"""The peer's Celery worker, as a harness child: ``ready`` once consuming, gone on stdin EOF.

Runs ``celery worker`` in-process with its defaults for a 2-core machine (prefork
pool, one child per core) — what a user of the usual stack would deploy.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

from celery.signals import worker_ready

from bench.child import emit, raise_nofile
from bench.peer.tasks import app


def _watch_stdin(pid: int) -> None:
    """Stop (warm shutdown) when the harness closes our stdin or dies.

    Reads the raw descriptor: a thread blocked inside ``sys.stdin`` would hold its
    buffer lock across billiard's fork, and the pool child would hang closing stdin.
    """
    while os.read(0, 4096):
        pass
    os.kill(pid, signal.SIGTERM)


def cli() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    p.add_argument("--max-seconds", type=float, default=900.0)
    args = p.parse_args()
    raise_nofile()

    @worker_ready.connect  # type: ignore[misc]
    def _ready(**_: Any) -> None:
        emit("ready", pid=os.getpid())

    threading.Thread(target=_watch_stdin, args=(os.getpid(),), daemon=True).start()
    timer = threading.Timer(args.max_seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    app.conf.worker_redirect_stdouts = False
    app.worker_main(
        [
            "worker",
            "--loglevel=WARNING",
            f"--concurrency={args.concurrency}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    cli()
