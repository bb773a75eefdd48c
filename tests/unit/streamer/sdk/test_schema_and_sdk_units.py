"""Pure parts of payload validation and of the handler SDK's declarations."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.registry import parse_handler
from streamer.schema import MAX_REPORTED_ERRORS, format_path, payload_errors
from streamer.sdk import Action, ProgressFn, Request, registry_document
from streamer.sdk.server import _duration


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        ([], ""),
        (["a"], "a"),
        (["a", "b", 0], "a.b[0]"),
        ([0, "x"], "[0].x"),
        (["items", 3, "id"], "items[3].id"),
    ],
)
def test_format_path(parts: list[Any], text: str) -> None:
    assert format_path(parts) == text


SCHEMA = {
    "type": "object",
    "required": ["user"],
    "properties": {
        "user": {
            "type": "object",
            "required": ["name", "email"],
            "properties": {"name": {"type": "string"}, "email": {"type": "string", "format": "email"}},
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "day": {"type": "string", "format": "date"},
    },
}


def test_payload_errors_name_the_failing_paths() -> None:
    assert payload_errors(SCHEMA, {"user": {"name": "a", "email": "a@b.c"}}) == []
    errors = payload_errors(SCHEMA, {"user": {"name": 1}, "tags": ["ok", 2], "day": "2024-02-30"})
    assert [e["path"] for e in errors] == ["day", "tags[1]", "user.email", "user.name"]
    assert errors[2]["message"] == "'email' is a required property"
    assert payload_errors(SCHEMA, {})[0] == {"path": "user", "message": "'user' is a required property"}
    assert payload_errors(SCHEMA, {"user": {"name": "a", "email": "nope"}})[0]["path"] == "user.email"


def test_payload_errors_without_schema_and_capped() -> None:
    assert payload_errors(None, {"anything": 1}) == []
    assert payload_errors({}, {"anything": 1}) == []
    many = payload_errors({"type": "array", "items": {"type": "string"}}, list(range(500)))
    assert len(many) == MAX_REPORTED_ERRORS
    assert payload_errors({"type": "object"}, [1])[0]["path"] == ""


class Report(Action):
    name = "report"
    mode = "auto"
    estimated_duration = 12.5
    timeout = 600
    max_attempts = 5
    required_permissions = ("reports:write",)
    description = "Makes a report."
    priority = 3
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return None


class Plain(Action):
    name = "plain"
    timeout = 0.25

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        return None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(600, "10m"), (5, "5s"), (0.2, "0.2s"), (90, "90s"), (0.0015, "0.002s"), (3600, "60m")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


def test_registry_document_round_trips_through_the_registry_parser() -> None:
    doc = registry_document([Report(), Plain()], name="reports", endpoint="10.0.0.1:50061")
    assert doc["apiVersion"] == "streamer.dev/v1alpha1" and doc["kind"] == "StreamerHandler"
    assert doc["status"] == {"endpoint": "10.0.0.1:50061"}
    report, plain = parse_handler(doc)
    assert report.name == "report" and report.handler == "reports" and report.endpoint == "10.0.0.1:50061"
    assert (report.mode, report.estimated_duration, report.timeout, report.max_attempts) == (
        "auto",
        12.5,
        600,
        5,
    )
    assert report.required_permissions == ("reports:write",)
    assert (report.priority, report.description) == (3, "Makes a report.")
    assert report.payload_schema == Report.schema
    assert report.is_async(threshold=5.0)
    assert (plain.mode, plain.timeout, plain.payload_schema, plain.estimated_duration) == (
        "sync",
        0.25,
        None,
        0.0,
    )


@pytest.mark.parametrize(
    "attrs",
    [
        {"name": ""},
        {"name": "$x"},
        {"name": "has space"},
        {"mode": "maybe"},
        {"timeout": 0},
        {"timeout": float("inf")},
        {"estimated_duration": -1},
        {"max_attempts": 0},
        {"required_permissions": "admin"},
        {"schema": {"type": 5}},
    ],
)
def test_bad_declarations(attrs: dict[str, Any]) -> None:
    action = Plain()
    for key, value in attrs.items():
        setattr(action, key, value)
    with pytest.raises(ValueError):
        action.check()
