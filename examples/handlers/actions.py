"""The example actions (DESIGN §3), each with one JSON Schema and one set of rules.

The original Streamer validated the same action differently in two places; here the
schema below is the only declaration: the router enforces it from the registry
document (generated from these classes), the SDK enforces it again before
``process``, and rules a schema cannot express live in ``validate`` right next to it.

The pauses between progress steps of ``echo_async``, ``generate_report``,
``process_data`` and ``bulk_operation`` come from ``STREAMER_EXAMPLES_STEP_SECONDS``
(default 0.2; 0 for benchmarks). ``delay`` sleeps what its payload asks.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from streamer.protocol import timestamp
from streamer.sdk import Action, ProgressFn, Request, ValidationError

STEP_ENV = "STREAMER_EXAMPLES_STEP_SECONDS"
DEFAULT_STEP_SECONDS = 0.2
_STARTED = time.monotonic()

DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def step_seconds() -> float:
    """The pause between progress steps (read on every call, so tests can change it)."""
    raw = os.environ.get(STEP_ENV, "").strip()
    if not raw:
        return DEFAULT_STEP_SECONDS
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_STEP_SECONDS
    return max(0.0, min(value, 60.0))


async def _step() -> None:
    pause = step_seconds()
    if pause > 0:
        await asyncio.sleep(pause)


async def _stages(
    progress: ProgressFn, stages: Iterable[tuple[float, str]], details: Mapping[str, Any] | None = None
) -> None:
    """Report each (percentage, message) stage, pausing a step after each one."""
    for pct, message in stages:
        await progress(pct, message, details)
        await _step()


def _stable_int(*parts: Any, modulo: int) -> int:
    """A number derived from the inputs, the same on every run (fake but repeatable data)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") % modulo


class Echo(Action):
    name = "echo"
    mode = "sync"
    timeout = 5.0
    description = "Answers with the message it was sent."
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string", "maxLength": 65536}},
    }

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        # "echo" repeats the payload as the original Streamer's echo answered it.
        return {
            "message": request.payload["message"],
            "echo": dict(request.payload),
            "timestamp": timestamp(),
        }


class Health(Action):
    name = "health"
    mode = "sync"
    timeout = 5.0
    description = "Reports that the handler is alive."
    schema: Mapping[str, Any] = {"type": "object"}

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return {
            "status": "healthy",
            "timestamp": timestamp(),
            "uptime_seconds": round(time.monotonic() - _STARTED, 3),
        }


class Ping(Action):
    """The original demo client's first command (`ping`): the fastest sync round trip."""

    name = "ping"
    mode = "sync"
    timeout = 5.0
    description = "Answers pong at once."
    schema: Mapping[str, Any] = {"type": "object"}

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return {"pong": True, "timestamp": timestamp()}


class ValidateUser(Action):
    name = "validate_user"
    mode = "sync"
    timeout = 5.0
    description = "Checks a user's name and e-mail address."
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["name", "email"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S"},
            "email": {"type": "string", "maxLength": 320, "pattern": "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"},
        },
    }

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        local, _, domain = request.payload["email"].rpartition("@")
        return {
            "valid": True,
            "name": request.payload["name"].strip(),
            "email": f"{local}@{domain.lower()}",
        }


class EchoAsync(Action):
    name = "echo_async"
    mode = "async"
    estimated_duration = 2.0
    timeout = 60.0
    max_attempts = 3
    description = "Echoes the message after reporting progress 0, 25, 50, 75 and 100."
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {"type": "string", "maxLength": 65536},
            "timestamp": {"type": ["number", "string"]},
        },
    }

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        await _stages(progress, [(pct, f"Echoing ({pct}%)") for pct in (0, 25, 50, 75)])
        await progress(100, "Done")
        result: dict[str, Any] = {"message": request.payload["message"], "processed_at": timestamp()}
        if "timestamp" in request.payload:
            result["timestamp"] = request.payload["timestamp"]
        return result


class Delay(Action):
    name = "delay"
    mode = "auto"
    estimated_duration = 10.0
    timeout = 600.0
    max_attempts = 1
    description = "Waits the given seconds (default 5), reporting progress at each step (default 5)."
    schema: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "seconds": {"type": "number", "minimum": 0, "maximum": 300},
            "steps": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    }

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        seconds = float(request.payload.get("seconds", 5))
        steps = int(request.payload.get("steps", 5))
        await progress(0, f"Waiting {seconds:g}s in {steps} step(s)")
        for i in range(1, steps + 1):
            await asyncio.sleep(seconds / steps)
            await progress(100 * i / steps, f"Step {i} of {steps}", {"step": i, "steps": steps})
        return {"seconds": seconds, "steps": steps}


class GenerateReport(Action):
    name = "generate_report"
    mode = "async"
    estimated_duration = 10.0
    timeout = 300.0
    max_attempts = 3
    priority = 5
    description = "Builds a report for a date range in pdf, csv or json."
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["start_date", "end_date"],
        "properties": {
            "start_date": {"type": "string", "pattern": DATE_PATTERN, "format": "date"},
            "end_date": {"type": "string", "pattern": DATE_PATTERN, "format": "date"},
            "format": {"type": "string", "enum": ["pdf", "csv", "json"], "default": "pdf"},
            "report_type": {"type": "string", "minLength": 1, "maxLength": 128, "default": "summary"},
        },
    }

    async def validate(self, request: Request) -> None:
        start = datetime.date.fromisoformat(request.payload["start_date"])
        end = datetime.date.fromisoformat(request.payload["end_date"])
        if end < start:
            raise ValidationError(
                "end_date must not be before start_date",
                details=[{"path": "end_date", "message": "must be on or after start_date"}],
            )

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        p = request.payload
        fmt = p.get("format", "pdf")
        report_type = p.get("report_type", "summary")
        start = datetime.date.fromisoformat(p["start_date"])
        end = datetime.date.fromisoformat(p["end_date"])
        days = (end - start).days + 1
        steps = [
            (0, "Starting report"),
            (20, "Querying data"),
            (40, "Aggregating"),
            (60, f"Rendering {fmt.upper()}"),
            (80, "Storing the report"),
        ]
        await _stages(progress, steps)
        rows = days * (10 + _stable_int(report_type, modulo=90))
        report_id = f"rpt-{_stable_int(request.request_id, p, modulo=16**12):012x}"
        await progress(100, "Report ready")
        return {
            "report_id": report_id,
            "report_type": report_type,
            "format": fmt,
            "start_date": p["start_date"],
            "end_date": p["end_date"],
            "days": days,
            "rows": rows,
            "url": f"https://reports.example.com/{report_id}.{fmt}",
            "generated_at": timestamp(),
        }


class ProcessData(Action):
    name = "process_data"
    mode = "async"
    estimated_duration = 8.0
    timeout = 300.0
    max_attempts = 3
    description = "Runs an operation over a dataset."
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["dataset_id", "operation"],
        "properties": {
            "dataset_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "operation": {"type": "string", "minLength": 1, "maxLength": 128},
        },
    }

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        dataset_id = request.payload["dataset_id"]
        operation = request.payload["operation"]
        records = 1000 + _stable_int(dataset_id, modulo=99000)
        stages = [
            (0, "Loading dataset"),
            (25, "Reading records"),
            (50, f"Running {operation}"),
            (75, "Writing output"),
        ]
        await _stages(progress, stages, {"records": records})
        await progress(100, "Done", {"records": records})
        return {
            "dataset_id": dataset_id,
            "operation": operation,
            "records_processed": records,
            "output_id": f"out-{_stable_int(dataset_id, operation, modulo=16**10):010x}",
            "completed_at": timestamp(),
        }


class KnowledgeQuery(Action):
    """The original demo client's `knowledge <query>` command: a fake knowledge-base search."""

    name = "knowledge_query"
    mode = "async"
    estimated_duration = 6.0
    timeout = 120.0
    max_attempts = 3
    description = "Searches a knowledge base and answers with the best matches."
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "\\S"},
            "knowledge_base_id": {"type": "string", "minLength": 1, "maxLength": 256, "default": "default"},
            "max_results": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
        },
    }

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        query = request.payload["query"].strip()
        kb = request.payload.get("knowledge_base_id", "default")
        limit = int(request.payload.get("max_results", 5))
        await _stages(progress, [(0, "Parsing the query"), (30, "Searching"), (70, "Ranking matches")])
        matches = [
            {
                "document_id": f"doc-{_stable_int(kb, query, i, modulo=16**8):08x}",
                "score": round(1.0 - i * 0.1 - _stable_int(query, i, modulo=50) / 1000, 3),
                "snippet": f"...{query[:80]}... (match {i + 1})",
            }
            for i in range(limit)
        ]
        await progress(100, "Done", {"matches": len(matches)})
        return {"query": query, "knowledge_base_id": kb, "results": matches, "answered_at": timestamp()}


class BulkOperation(Action):
    """Some items fail on purpose, to show a partial result.

    An item fails when it is ``null``, an object with ``"fail": true``, or (with the
    default ``failure_rate`` 0.1) one of roughly a tenth of the others, picked by a
    hash of the item so the same input always fails the same way.
    """

    name = "bulk_operation"
    mode = "async"
    estimated_duration = 15.0
    timeout = 600.0
    max_attempts = 2
    description = "Processes many items; some may fail, the result lists both."
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "minItems": 1, "maxItems": 10000},
            "operation": {"type": "string", "minLength": 1, "maxLength": 128},
            "failure_rate": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }

    @staticmethod
    def _fails(item: Any, rate: float) -> str | None:
        if item is None:
            return "item is null"
        if isinstance(item, dict) and item.get("fail") is True:
            return "item asked to fail"
        if rate > 0 and _stable_int(item, modulo=10_000) < rate * 10_000:
            return "simulated processing error"
        return None

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        items: list[Any] = request.payload["items"]
        operation = request.payload.get("operation", "process")
        rate = float(request.payload.get("failure_rate", 0.1))
        total = len(items)
        chunk = max(1, total // 10)
        failures: list[dict[str, Any]] = []
        await progress(0, f"Processing {total} item(s)")
        for index, item in enumerate(items):
            reason = self._fails(item, rate)
            if reason is not None:
                failures.append({"index": index, "item": item, "error": reason})
            done = index + 1
            if done % chunk == 0 and done < total:
                await progress(100 * done / total, f"{done} of {total} item(s)", {"failed": len(failures)})
                await _step()
        await progress(100, f"{total} of {total} item(s)", {"failed": len(failures)})
        succeeded = total - len(failures)
        return {
            "operation": operation,
            "status": "completed" if not failures else ("failed" if succeeded == 0 else "partial"),
            "total": total,
            "succeeded": succeeded,
            "failed": len(failures),
            "failures": failures,
        }


ACTIONS: tuple[type[Action], ...] = (
    Echo,
    Health,
    Ping,
    ValidateUser,
    EchoAsync,
    Delay,
    GenerateReport,
    ProcessData,
    KnowledgeQuery,
    BulkOperation,
)
