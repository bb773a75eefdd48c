"""The peer's job: a Celery task that reports progress 0/25/50/75/100 over Socket.IO.

This is the textbook python-socketio + Celery arrangement: the web process enqueues
the task on a Redis broker; the worker emits ``progress`` and ``complete`` to the
client's room through a write-only ``socketio.RedisManager`` (Redis pub/sub), and the
Socket.IO server relays them to the socket. No sleeping, like ``echo_async`` with
``STREAMER_EXAMPLES_STEP_SECONDS=0``.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import socketio
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench_peer", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
)

_emitter: socketio.RedisManager | None = None


def emitter() -> socketio.RedisManager:
    """One write-only Socket.IO manager per worker process (created after the fork)."""
    global _emitter
    if _emitter is None:
        _emitter = socketio.RedisManager(REDIS_URL, write_only=True)
    return _emitter


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


@app.task(name="bench.echo_async")  # type: ignore[misc]
def echo_async(sid: str, request_id: str, message: str) -> None:
    out = emitter()
    for pct in (0, 25, 50, 75, 100):
        out.emit(
            "progress",
            {
                "request_id": request_id,
                "percentage": pct,
                "message": f"Echoing ({pct}%)",
                "timestamp": _now(),
            },
            to=sid,
        )
    result: dict[str, Any] = {"message": message, "processed_at": _now()}
    out.emit("complete", {"request_id": request_id, "result": result, "timestamp": _now()}, to=sid)
