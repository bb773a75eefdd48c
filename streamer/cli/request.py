"""``streamer request ACTION``: run one request and show it like a user would want to see it.

Async requests get a live progress bar on stderr (plain ``[ 40%] message`` lines when
stderr is not a terminal); the result is printed as JSON on stdout. ``--json`` prints
every server message of the request instead, one JSON object per line, for scripts.

Exit status (stable, documented in docs/client.md):

==  ==================================
0   success
1   an error with an unknown code
2   usage error (bad flag, payload not JSON)
10  VALIDATION_ERROR
11  INVALID_ACTION
12  PAYLOAD_TOO_LARGE
13  UNAUTHORIZED
14  FORBIDDEN
15  NOT_FOUND
16  DUPLICATE_REQUEST
17  RATE_LIMITED
18  TIMEOUT (the server's, or ``--timeout`` ran out)
19  CANCELLED
20  PROCESSING_FAILED
21  SERVICE_UNAVAILABLE (also: cannot connect)
22  INTERNAL_ERROR
23  RESULT_TOO_LARGE
130 interrupted (Ctrl-C; the request is cancelled on the server)
==  ==================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from streamer import protocol
from streamer.client import Progress, RequestHandle, StreamerClient, StreamerError, is_terminal
from streamer.client.errors import RequestTimeoutError
from streamer.local.devauth import DEV_TENANT, DEV_USER, dev_token

DEFAULT_URL = "ws://127.0.0.1:8080/ws"

EXIT_CODES: dict[str, int] = {
    protocol.VALIDATION_ERROR: 10,
    protocol.INVALID_ACTION: 11,
    protocol.PAYLOAD_TOO_LARGE: 12,
    protocol.UNAUTHORIZED: 13,
    protocol.FORBIDDEN: 14,
    protocol.NOT_FOUND: 15,
    protocol.DUPLICATE_REQUEST: 16,
    protocol.RATE_LIMITED: 17,
    protocol.TIMEOUT: 18,
    protocol.CANCELLED: 19,
    protocol.PROCESSING_FAILED: 20,
    protocol.SERVICE_UNAVAILABLE: 21,
    protocol.INTERNAL_ERROR: 22,
    protocol.RESULT_TOO_LARGE: 23,
}
EXIT_UNKNOWN_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def exit_code(code: str) -> int:
    """The exit status of an error code (see the module docstring)."""
    return EXIT_CODES.get(code, EXIT_UNKNOWN_ERROR)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "request",
        help="run one request with a live progress bar",
        description="Run one request against a Streamer WebSocket. The result is printed as JSON on stdout; "
        "progress and errors go to stderr. Non-zero exit status per error code (see docs/client.md).",
    )
    p.add_argument("action", help="action name, e.g. echo or generate_report")
    p.add_argument(
        "--payload", "-p", default="{}", help="JSON object payload (default {}); @FILE reads a file"
    )
    p.add_argument("--metadata", help="JSON object metadata (e.g. '{\"priority\": 5}')")
    p.add_argument("--url", default=None, help=f"WebSocket URL (default: STREAMER_URL, else {DEFAULT_URL})")
    p.add_argument(
        "--token",
        default=None,
        help="JWT (default: STREAMER_TOKEN, else a development token for --user/--tenant)",
    )
    p.add_argument("--user", default=DEV_USER, help="user of the development token (when no token is given)")
    p.add_argument("--tenant", default=DEV_TENANT, help="tenant of the development token")
    p.add_argument("--permissions", default="", help="comma-separated permissions of the development token")
    p.add_argument(
        "--id", dest="request_id", help="request id (default: generated); re-sending one is idempotent"
    )
    p.add_argument("--timeout", type=float, default=None, help="give up (and cancel) after this many seconds")
    p.add_argument(
        "--json", action="store_true", help="print every server message as one JSON line on stdout"
    )


def parse_object(raw: str | None, *, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    text = raw
    if raw.startswith("@"):
        with open(raw[1:], encoding="utf-8") as fh:
            text = fh.read()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--{what} must be a JSON object")
    return value


class _Display:
    """Progress on stderr: a rich bar on a terminal, plain lines otherwise, nothing with --json."""

    def __init__(self, *, action: str, enabled: bool) -> None:
        self.action = action
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None
        self._last: tuple[float, str] | None = None

    def __enter__(self) -> _Display:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.fields[action]}[/bold]"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("waiting", total=None, action=self.action)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def queued(self, request_id: str) -> None:
        if self.live:
            self._progress.update(self._task, total=100, completed=0, description="queued")
        elif self.enabled:
            print(f"queued {request_id}", file=sys.stderr, flush=True)

    def update(self, progress: Progress) -> None:
        key = (progress.percentage, progress.message)
        if key == self._last:
            return
        self._last = key
        if self.live:
            self._progress.update(
                self._task, total=100, completed=progress.percentage, description=progress.message
            )
        elif self.enabled:
            print(f"[{progress.percentage:3.0f}%] {progress.message}", file=sys.stderr, flush=True)

    def done(self, ok: bool) -> None:
        if self.live and self._task is not None:
            total = self._progress.tasks[0].total
            if ok:
                self._progress.update(
                    self._task, total=total or 100, completed=total or 100, description="done"
                )
            else:
                self._progress.update(self._task, description="failed")


async def _request(args: argparse.Namespace) -> int:
    try:
        payload = parse_object(args.payload, what="payload") or {}
        metadata = parse_object(args.metadata, what="metadata")
    except (ValueError, OSError) as exc:
        print(f"streamer request: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = args.url or os.environ.get("STREAMER_URL") or DEFAULT_URL
    token = args.token or os.environ.get("STREAMER_TOKEN")
    if not token:
        permissions = [p.strip() for p in str(args.permissions).split(",") if p.strip()]
        token = dev_token(user=args.user, tenant=args.tenant, permissions=permissions)

    def emit(msg: Mapping[str, Any]) -> None:
        print(json.dumps(msg, ensure_ascii=False, separators=(",", ":")), flush=True)

    display = _Display(action=args.action, enabled=not args.json)
    handle: RequestHandle | None = None
    try:
        async with StreamerClient(url, token=token, heartbeat=15.0, max_reconnect_attempts=5) as client:
            with display:
                handle = await client.start(
                    args.action,
                    payload,
                    request_id=args.request_id,
                    metadata=metadata,
                    on_progress=display.update,
                )
                follower = asyncio.ensure_future(
                    _follow(handle, display=display, emit=emit if args.json else None)
                )
                try:
                    result = await handle.result(timeout=args.timeout)
                except (RequestTimeoutError, asyncio.CancelledError) as exc:
                    # --timeout ran out, or Ctrl-C: the user gave up, so stop the work too.
                    cancelled = False
                    if not handle.done:
                        with contextlib.suppress(StreamerError, asyncio.CancelledError):
                            await client.cancel(handle.request_id, timeout=2.0)
                            cancelled = True
                    if cancelled and isinstance(exc, RequestTimeoutError):
                        # The client's own words ("may still be running") are no longer true.
                        raise RequestTimeoutError(
                            f"No result within {args.timeout:g}s; the request was cancelled on the server",
                            request_id=handle.request_id,
                        ) from None
                    raise
                finally:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(follower), timeout=0.5)
                    follower.cancel()
                display.done(True)
    except StreamerError as exc:
        display.done(False)
        answered = handle is not None and any(is_terminal(m) for m in handle.messages)
        if args.json and not answered:  # a client-side failure: still one line for scripts
            emit(
                protocol.error_message(exc.code, exc.message, request_id=exc.request_id, details=exc.details)
            )
        hint = ""
        if exc.code == protocol.SERVICE_UNAVAILABLE and handle is None:
            hint = " (is `streamer dev` running?)"
        print(f"{exc.code}: {exc.message}{hint}", file=sys.stderr)
        if exc.details is not None and not args.json:
            print(json.dumps(exc.details, indent=2, ensure_ascii=False), file=sys.stderr)
        return exit_code(exc.code)
    if not args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


async def _follow(handle: RequestHandle, *, display: _Display, emit: Any) -> None:
    async for msg in handle.events():
        if emit is not None:
            emit(msg)
        if msg.get("type") == "acknowledgment":
            display.queued(handle.request_id)


async def _main(args: argparse.Namespace) -> int:
    task = asyncio.ensure_future(_request(args))
    loop = asyncio.get_running_loop()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, interrupt)
    try:
        return await task
    except asyncio.CancelledError:
        if not interrupted:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))
