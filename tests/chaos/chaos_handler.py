"""The examples handler, with every run of an action written down (the chaos runs' handler).

Each call of ``process`` appends ``{"run", "rid", "attempt", "pid", "start"}`` and, when it
ends however it ends (result, error, cancelled), ``{"run", "rid", "pid", "end"}`` to the JSON-lines
file named by ``STREAMER_CHAOS_RUNS_FILE`` (one handler process at a time writes it, with
``O_APPEND``). From it the chaos run counts handler runs per request and finds runs of one
request that overlapped in time — the "concurrent runs" figure, which must be 0. A run
cut short by a SIGKILL of the handler has no end line; it ended when its process died.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from examples.handlers import handlers as example_handlers
from streamer.sdk import Action, ProgressFn, Request

NAME = "examples"
RUNS_FILE_ENV = "STREAMER_CHAOS_RUNS_FILE"


def _write(line: dict[str, Any]) -> None:
    path = os.environ.get(RUNS_FILE_ENV)
    if not path:
        return
    data = (json.dumps(line) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one small write: atomic with O_APPEND
    finally:
        os.close(fd)


def _recorded(action: Action) -> Action:
    inner = action.process

    async def process(request: Request, progress: ProgressFn) -> Any:
        pid, run = os.getpid(), uuid.uuid4().hex
        _write(
            {
                "run": run,
                "rid": request.request_id,
                "attempt": request.attempt,
                "pid": pid,
                "start": time.time(),
            }
        )
        try:
            return await inner(request, progress)
        finally:
            _write({"run": run, "rid": request.request_id, "pid": pid, "end": time.time()})

    action.process = process  # type: ignore[method-assign]
    return action


def handlers() -> list[Action]:
    return [_recorded(action) for action in example_handlers()]
