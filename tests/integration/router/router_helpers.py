"""Test actions and helpers shared by the router and SDK integration tests."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from streamer.api.v1 import common_pb2, router_pb2
from streamer.sdk import Action, PermanentError, ProgressFn, Request, RetryableError, ValidationError


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Counter(Action):
    """Sync; answers how many times it ran (to prove a re-send did not run it again)."""

    name = "t_count"
    mode = "sync"
    timeout = 5.0

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.gate: asyncio.Event | None = None

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.runs[request.request_id] = self.runs.get(request.request_id, 0) + 1
        if self.gate is not None:
            await self.gate.wait()
        return {"runs": self.runs[request.request_id], "user": request.user_id}


class AtThreshold(Action):
    name = "t_auto_5"
    mode = "auto"
    estimated_duration = 5.0

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return {"sync": True}


class OverThreshold(Action):
    name = "t_auto_over"
    mode = "auto"
    estimated_duration = 5.001

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return {"sync": True}


class Secret(Action):
    name = "t_secret"
    required_permissions = ("reports:read", "reports:export")

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return {"secret": 42}


class Sleepy(Action):
    """Sleeps ``payload.seconds``; records whether it was cancelled."""

    name = "t_sleep"
    timeout = 30.0

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.started.set()
        try:
            await asyncio.sleep(float(request.payload.get("seconds", 10)))
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return {"slept": True}


class Failing(Action):
    """Raises what ``payload.kind`` names."""

    name = "t_fail"

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        kind = request.payload.get("kind")
        await progress(10, "about to fail")
        if kind == "validation":
            raise ValidationError("bad input", details=[{"path": "kind", "message": "nope"}])
        if kind == "retryable":
            raise RetryableError("database busy")
        if kind == "permanent":
            raise PermanentError("no such dataset")
        if kind == "timeout_inside":
            raise TimeoutError("an upstream call timed out")
        if kind == "not_json":
            return {"value": object()}
        raise RuntimeError("secret internal detail")


class Chatty(Action):
    """Reports many progress events (more than the SDK's queue holds)."""

    name = "t_chatty"

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        count = int(request.payload.get("count", 10))
        for i in range(count):
            await progress(100 * i / count, f"step {i}", {"i": i})
        return {"count": count}


class Checked(Action):
    """Schema plus a rule in ``validate``."""

    name = "t_checked"
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["low", "high"],
        "properties": {"low": {"type": "integer"}, "high": {"type": "integer"}},
    }

    async def validate(self, request: Request) -> None:
        if request.payload["high"] < request.payload["low"]:
            raise ValidationError("high < low", details=[{"path": "high", "message": "must be >= low"}])

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return {"span": request.payload["high"] - request.payload["low"]}


Route = Callable[..., Awaitable[list[dict[str, Any]]]]
"""``await route(action, user=..., tenant=..., ...)`` → the answered frames as dicts."""


@dataclasses.dataclass
class ActionsUnderTest:
    """The stateful test actions the shared handler server runs."""

    counter: Counter
    sleepy: Sleepy


def route_request(
    action: str,
    *,
    request_id: str,
    user: str,
    tenant: str,
    connection: str = "conn-1",
    payload: Any = None,
    metadata: Any = None,
    permissions: tuple[str, ...] = (),
) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        connection_id=connection,
        principal=common_pb2.Principal(user_id=user, tenant_id=tenant, permissions=list(permissions)),
        action=action,
        request_id=request_id,
        payload=json.dumps(payload if payload is not None else {}).encode(),
        metadata=json.dumps(metadata if metadata is not None else {}).encode(),
    )
