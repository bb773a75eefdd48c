"""Liveness of the operator's watches, for ``/healthz``.

kopf keeps one watch stream per resource kind. When a stream ends (the API server's
timeout, kopf's own inactivity timeout of ``settings.watching.inactivity_timeout``
seconds without an event or bookmark, a dropped connection), kopf lists and watches
again, retrying a failing request with its back-offs (about a minute in all) before
it gives up and the operator stops. Meanwhile nothing is reconciled although the
process looks fine.

:class:`WatchHealth` notices it: kopf's list and watch requests are made by its
watching module (their ``logger`` says so); every such request is timed from its
first attempt until the API server answered, retries included. A request still
unanswered after ``stale_seconds`` — an API server that refuses or never answers,
a network partition — makes :meth:`WatchHealth.problem` name the resource, and
``/healthz`` answers 503 so the kubelet restarts the pod; once kopf's retry gets an
answer, ``/healthz`` is 200 again. A stalled stream (open but silent) is ended by
kopf's inactivity timeout and its reconnection is timed like any other.

kopf has no public hook for this, so :func:`install` wraps its request function
(``kopf._cogs.clients.api.request``) once per process; requests of every other kind
pass through untouched. Each operator (one event loop each, tests run several in one
process) has its own :class:`WatchHealth`, found by the running loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import urllib.parse
import weakref
from typing import Any

log = logging.getLogger(__name__)

WATCHING_LOGGER = "kopf._cogs.clients.watching"
DEFAULT_STALE_SECONDS = 30.0

_trackers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WatchHealth] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()
_installed = False


class WatchHealth:
    """The watch requests in progress, and since when."""

    def __init__(self, *, stale_seconds: float = DEFAULT_STALE_SECONDS, clock: Any = time.monotonic) -> None:
        self.stale_seconds = stale_seconds
        self.clock = clock
        self._pending: dict[int, tuple[str, float]] = {}
        self._ids = iter(range(1, 1 << 62))
        self.answered = 0

    def started(self, what: str) -> int:
        token = next(self._ids)
        self._pending[token] = (what, float(self.clock()))
        return token

    def finished(self, token: int, *, answered: bool) -> None:
        self._pending.pop(token, None)
        if answered:
            self.answered += 1

    def problem(self) -> str | None:
        """Why the watches are dead, or None while every one is answered within the limit."""
        now = float(self.clock())
        ages = [(what, now - since) for what, since in self._pending.values()]
        stale = [(what, age) for what, age in ages if age > self.stale_seconds]
        if not stale:
            return None
        what, age = max(stale, key=lambda item: item[1])
        return f"the watch of {what} has had no answer from the API server for {age:.0f}s"

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Track the watches of the operator running on ``loop`` (default: the running one)."""
        install()
        _trackers[loop or asyncio.get_running_loop()] = self


def _resource(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    return path.rsplit("/", 1)[-1] or path


def install() -> None:
    """Wrap kopf's request function so that its watch requests are timed (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        try:
            from kopf._cogs.clients import api  # kopf's internal client: no public hook exists

            original = api.request
        except (ImportError, AttributeError):  # another kopf: run on, without this check
            log.warning("kopf's request function was not found: /healthz does not watch the watches")
            _installed = True
            return

        @functools.wraps(original)
        async def request(method: str, url: str, **kwargs: Any) -> Any:
            logger = kwargs.get("logger")
            if getattr(logger, "name", "") != WATCHING_LOGGER:
                return await original(method, url, **kwargs)
            try:
                tracker = _trackers.get(asyncio.get_running_loop())
            except RuntimeError:
                tracker = None
            if tracker is None:
                return await original(method, url, **kwargs)
            token = tracker.started(_resource(url))
            answered = False
            try:
                response = await original(method, url, **kwargs)
                answered = True
                return response
            finally:
                tracker.finished(token, answered=answered)

        api.request = request
        _installed = True
