"""The example handlers: one schema and one set of rules each, and the registry file agrees."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from examples.handlers import handlers
from examples.handlers.main import registry_yaml
from streamer.registry import parse_handler
from streamer.schema import payload_errors
from streamer.sdk import Action, Request, ValidationError

ROOT = pathlib.Path(__file__).resolve().parents[3]
ACTIONS = {a.name: a for a in handlers()}


def request(action: str, payload: dict[str, Any]) -> Request:
    return Request(
        request_id="r-1",
        action=action,
        payload=payload,
        metadata={},
        user_id="u",
        tenant_id="t",
        permissions=(),
        attempt=1,
        connection_id="c",
    )


async def problems(action: str, payload: dict[str, Any]) -> list[str]:
    """Failing paths: the schema's, then (only if it passed) the action's own rules."""
    act = ACTIONS[action]
    errors = payload_errors(act.schema, payload)
    if errors:
        return sorted({e["path"] for e in errors})
    try:
        await act.validate(request(action, payload))
    except ValidationError as exc:
        return [d["path"] for d in exc.details]
    return []


class Progress:
    def __init__(self) -> None:
        self.seen: list[tuple[float, str, Mapping[str, Any] | None]] = []

    async def __call__(
        self, percentage: float, message: str = "", details: Mapping[str, Any] | None = None
    ) -> None:
        self.seen.append((percentage, message, details))


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_EXAMPLES_STEP_SECONDS", "0")


def test_every_example_is_declared_once_with_a_schema() -> None:
    names = [a.name for a in handlers()]
    assert names == [
        "echo",
        "health",
        "ping",
        "validate_user",
        "echo_async",
        "delay",
        "generate_report",
        "process_data",
        "knowledge_query",
        "bulk_operation",
    ]
    for action in handlers():
        action.check()
        assert action.schema is not None and action.schema.get("type") == "object"
    assert {a.name: a.mode for a in handlers()}["delay"] == "auto"
    assert ACTIONS["delay"].estimated_duration == 10.0


def test_registry_file_matches_the_action_classes() -> None:
    text = (ROOT / "examples" / "registry.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert len(docs) == 1
    assert docs[0]["status"]["endpoint"] == "127.0.0.1:50061"
    from_file = parse_handler(docs[0])
    from_code = parse_handler(yaml.safe_load(registry_yaml("127.0.0.1:50061")))
    assert from_file == from_code
    assert text == registry_yaml("127.0.0.1:50061"), "regenerate examples/registry.yaml (see its header)"


GOOD: list[tuple[str, dict[str, Any]]] = [
    # what the original demo client (pay-theory/streamer demo/client.js) sends, command by command
    ("ping", {}),
    ("echo", {"message": "Hello, World!"}),
    (
        "generate_report",
        {"start_date": "2024-01-01", "end_date": "2024-01-31", "format": "pdf", "report_type": "monthly"},
    ),
    ("echo_async", {"message": "Testing async echo", "timestamp": "2026-11-22T01:02:03.456Z"}),
    (
        "knowledge_query",
        {"query": "What is async processing?", "knowledge_base_id": "demo-kb-123", "max_results": 5},
    ),
    ("process_data", {"dataset_id": "demo-dataset-123", "operation": "transform"}),
    # what the design's demo session sends
    ("echo", {"message": "Hello"}),
    (
        "generate_report",
        {"start_date": "2024-01-01", "end_date": "2024-01-31", "format": "pdf", "report_type": "sales"},
    ),
    ("process_data", {"dataset_id": "ds-1", "operation": "aggregate"}),
    ("validate_user", {"name": "Ann", "email": "ann@example.com"}),
    # and other valid shapes
    ("knowledge_query", {"query": "q"}),
    ("health", {}),
    ("echo_async", {"message": "hi"}),
    ("echo_async", {"message": "hi", "timestamp": 1700000000.5}),
    ("echo_async", {"message": "hi", "timestamp": "2024-01-01T00:00:00Z"}),
    ("delay", {}),
    ("delay", {"seconds": 0, "steps": 1}),
    ("delay", {"seconds": 2.5, "steps": 10}),
    ("generate_report", {"start_date": "2024-01-31", "end_date": "2024-01-31"}),
    ("generate_report", {"start_date": "2024-02-29", "end_date": "2024-03-01", "format": "csv"}),
    ("bulk_operation", {"items": [1, "two", {"three": 3}]}),
    ("bulk_operation", {"items": [None], "operation": "import", "failure_rate": 0}),
]

BAD: list[tuple[str, dict[str, Any], list[str]]] = [
    ("echo", {}, ["message"]),
    ("echo", {"message": 5}, ["message"]),
    ("echo_async", {"timestamp": 1}, ["message"]),
    ("echo_async", {"message": "x", "timestamp": True}, ["timestamp"]),
    ("delay", {"seconds": -1}, ["seconds"]),
    ("delay", {"seconds": 301, "steps": 0}, ["seconds", "steps"]),
    ("delay", {"steps": 2.5}, ["steps"]),
    ("generate_report", {"end_date": "2024-01-31"}, ["start_date"]),
    ("generate_report", {"start_date": "2024/01/01", "end_date": "2024-01-31"}, ["start_date"]),
    ("generate_report", {"start_date": "2024-02-30", "end_date": "2024-03-01"}, ["start_date"]),
    ("generate_report", {"start_date": "2024-01-01", "end_date": "2024-01-31", "format": "docx"}, ["format"]),
    (
        "generate_report",
        {"start_date": "2024-01-01", "end_date": "2024-01-31", "report_type": ""},
        ["report_type"],
    ),
    ("generate_report", {"start_date": "2024-02-01", "end_date": "2024-01-31"}, ["end_date"]),
    ("process_data", {"dataset_id": "ds-1"}, ["operation"]),
    ("process_data", {"dataset_id": "", "operation": "aggregate"}, ["dataset_id"]),
    ("bulk_operation", {}, ["items"]),
    ("bulk_operation", {"items": []}, ["items"]),
    ("bulk_operation", {"items": [1], "failure_rate": 2}, ["failure_rate"]),
    ("knowledge_query", {}, ["query"]),
    ("knowledge_query", {"query": "  "}, ["query"]),
    ("knowledge_query", {"query": "q", "max_results": 0}, ["max_results"]),
    ("validate_user", {"name": "Ann"}, ["email"]),
    ("validate_user", {"name": "Ann", "email": "not-an-email"}, ["email"]),
    ("validate_user", {"name": "   ", "email": "ann@example.com"}, ["name"]),
    ("validate_user", {"name": "", "email": "a@b"}, ["email", "name"]),
]


@pytest.mark.parametrize(("action", "payload"), GOOD)
async def test_good_payloads(action: str, payload: dict[str, Any]) -> None:
    assert await problems(action, payload) == []


@pytest.mark.parametrize(("action", "payload", "paths"), BAD)
async def test_bad_payloads(action: str, payload: dict[str, Any], paths: list[str]) -> None:
    assert await problems(action, payload) == paths


async def run(action: str, payload: dict[str, Any]) -> tuple[Any, Progress]:
    assert await problems(action, payload) == []
    progress = Progress()
    result = await ACTIONS[action].process(request(action, payload), progress)
    return result, progress


async def test_sync_examples() -> None:
    echo, _ = await run("echo", {"message": "Hello"})
    assert echo["message"] == "Hello"
    health, _ = await run("health", {})
    assert health["status"] == "healthy"
    user, _ = await run("validate_user", {"name": " Ann ", "email": "ann@EXAMPLE.com"})
    assert user == {"valid": True, "name": "Ann", "email": "ann@example.com"}
    pong, _ = await run("ping", {})
    assert pong["pong"] is True


async def test_knowledge_query_answers_max_results_matches() -> None:
    payload = {"query": "What is async processing?", "knowledge_base_id": "demo-kb-123", "max_results": 3}
    result, progress = await run("knowledge_query", payload)
    assert [p for p, _, _ in progress.seen] == [0, 30, 70, 100]
    assert result["knowledge_base_id"] == "demo-kb-123" and len(result["results"]) == 3
    scores = [m["score"] for m in result["results"]]
    assert scores == sorted(scores, reverse=True)
    again, _ = await run("knowledge_query", payload)
    assert [m["document_id"] for m in again["results"]] == [m["document_id"] for m in result["results"]]


async def test_echo_async_reports_quarters() -> None:
    result, progress = await run("echo_async", {"message": "hi", "timestamp": 17})
    assert [p for p, _, _ in progress.seen] == [0, 25, 50, 75, 100]
    assert (result["message"], result["timestamp"]) == ("hi", 17)


async def test_delay_reports_each_step() -> None:
    result, progress = await run("delay", {"seconds": 0, "steps": 4})
    assert [p for p, _, _ in progress.seen] == [0, 25, 50, 75, 100]
    assert result == {"seconds": 0.0, "steps": 4}


async def test_generate_report_and_process_data() -> None:
    payload = {"start_date": "2024-01-01", "end_date": "2024-01-31", "format": "pdf", "report_type": "sales"}
    report, progress = await run("generate_report", payload)
    assert len(progress.seen) >= 5 and progress.seen[-1][0] == 100
    assert [p for p, _, _ in progress.seen] == sorted(p for p, _, _ in progress.seen)
    assert (report["days"], report["format"], report["report_type"]) == (31, "pdf", "sales")
    again, _ = await run("generate_report", payload)
    assert again["report_id"] == report["report_id"] and again["rows"] == report["rows"]  # repeatable
    data, progress = await run("process_data", {"dataset_id": "ds-1", "operation": "aggregate"})
    assert data["dataset_id"] == "ds-1" and data["records_processed"] > 0
    assert progress.seen[-1][0] == 100


async def test_bulk_operation_partial_result() -> None:
    items: list[Any] = [{"id": i} for i in range(50)] + [None, {"id": "x", "fail": True}]
    result, progress = await run("bulk_operation", {"items": items})
    assert result["total"] == 52 and result["succeeded"] + result["failed"] == 52
    failed_at = {f["index"] for f in result["failures"]}
    assert {50, 51} <= failed_at
    assert result["status"] == "partial"
    assert progress.seen[-1][0] == 100
    clean, _ = await run("bulk_operation", {"items": [1, 2, 3], "failure_rate": 0})
    assert (clean["status"], clean["failed"], clean["failures"]) == ("completed", 0, [])


def test_handlers_is_the_entry_point() -> None:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="streamer.handlers") if ep.name == "examples"]
    assert found and found[0].value == "examples.handlers:handlers"
    assert all(isinstance(a, Action) for a in found[0].load()())
