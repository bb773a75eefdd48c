"""The router's middleware chain: logging and metrics around every call, then authorization.

A middleware is ``async def mw(ctx, next) -> frames``; :func:`chain` composes them
around the final step. ``observe`` is outermost so that every answer, including
one produced by a crash, is logged and counted exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from services.router.call import Frames, RouteContext
from streamer.logs import log_context
from streamer.metrics import counter, histogram
from streamer.protocol import FORBIDDEN, INTERNAL_ERROR, RETRYABLE_CODES, KnownServerMessage, error_message

log = logging.getLogger(__name__)

Next = Callable[[RouteContext], Awaitable[Frames]]
Middleware = Callable[[RouteContext, Next], Awaitable[Frames]]

REQUESTS = counter(
    "streamer_router_requests_total",
    "Routed client messages by action, mode (sync/async/system) and outcome (frame type or error code).",
    ["action", "mode", "outcome"],
)
DURATION = histogram(
    "streamer_router_request_duration_seconds", "Time to answer one Route call.", ["action", "mode"]
)


def chain(middlewares: Sequence[Middleware], final: Next) -> Next:
    """``middlewares[0]`` runs first and wraps the rest; ``final`` answers the call."""
    handler = final
    for mw in reversed(middlewares):
        handler = _bind(mw, handler)
    return handler


def _bind(mw: Middleware, nxt: Next) -> Next:
    async def run(ctx: RouteContext) -> Frames:
        return await mw(ctx, nxt)

    return run


def frame_outcome(frame: KnownServerMessage) -> str:
    """The metric outcome of one frame: its error code, else its type."""
    return frame["error"]["code"] if frame["type"] == "error" else frame["type"]


def outcome_of(frames: Frames) -> str:
    """The metric outcome of an answer: its first error code, else its first frame type."""
    failed = next((frame for frame in frames if frame["type"] == "error"), None)
    return frame_outcome(failed or frames[0]) if frames else "none"


def _action_label(ctx: RouteContext) -> str:
    # Unknown actions are client-chosen strings: never let them become label values.
    if ctx.call.is_system or ctx.spec is not None:
        return ctx.call.action
    return "unknown"


async def observe(ctx: RouteContext, nxt: Next) -> Frames:
    """Structured log line and metrics for every call; a crash becomes INTERNAL_ERROR."""
    call = ctx.call
    started = time.monotonic()
    with log_context(request_id=call.request_id, connection_id=call.connection_id or None):
        try:
            frames = await nxt(ctx)
        except Exception:
            log.exception("route failed", extra={"action": call.action[:128]})
            frames = [
                error_message(
                    INTERNAL_ERROR, "The router could not handle the request", request_id=call.request_id
                )
            ]
        elapsed = time.monotonic() - started
        outcome = outcome_of(frames)
        action = _action_label(ctx)
        REQUESTS.labels(action=action, mode=ctx.mode, outcome=outcome).inc()
        DURATION.labels(action=action, mode=ctx.mode).observe(elapsed)
        level = logging.DEBUG
        if outcome in RETRYABLE_CODES:
            level = logging.WARNING
        elif outcome.isupper():
            level = logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "routed",
                extra={
                    "action": call.action[:128],
                    "mode": ctx.mode,
                    "outcome": outcome,
                    "user_id": call.user_id,
                    "tenant_id": call.tenant_id,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        return frames


def missing_permissions(required: Sequence[str], granted: Sequence[str]) -> list[str]:
    """Permissions the caller lacks (exact names; every one of ``required`` is needed)."""
    have = set(granted)
    return [p for p in required if p not in have]


async def authorize(ctx: RouteContext, nxt: Next) -> Frames:
    """``FORBIDDEN`` unless the token carries every permission the action requires."""
    spec = ctx.spec
    if spec is not None and spec.required_permissions:
        missing = missing_permissions(spec.required_permissions, ctx.call.permissions)
        if missing:
            return [
                error_message(
                    FORBIDDEN,
                    f"Action {spec.name!r} needs permission(s) the token does not carry",
                    request_id=ctx.call.request_id,
                    details={"missing_permissions": missing},
                )
            ]
    return await nxt(ctx)
