"""protocol/streamer.schema.json and protocol/asyncapi.yaml against the Python code and the docs.

The schema is the contract the TypeScript client's types are generated from; these tests
hold ``streamer.protocol`` (and the router's ``status`` frames) to it, so the three agree.
"""

from __future__ import annotations

import json
import pathlib
import re
import typing
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer import protocol as p
from streamer.store import requests as store_requests

ROOT = pathlib.Path(__file__).resolve().parents[3]
SCHEMA_PATH = ROOT / "protocol" / "streamer.schema.json"
ASYNCAPI_PATH = ROOT / "protocol" / "asyncapi.yaml"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
DEFS: dict[str, Any] = SCHEMA["$defs"]
SERVER_TYPES = {
    "response": "ResponseMessage",
    "acknowledgment": "AcknowledgmentMessage",
    "progress": "ProgressMessage",
    "complete": "CompleteMessage",
    "status": "StatusMessage",
    "error": "ErrorMessage",
    "ping": "PingMessage",
    "pong": "PongMessage",
}
SYSTEM_FRAMES = {
    "$ping": "PingFrame",
    "$cancel": "CancelFrame",
    "$status": "StatusFrame",
    "$subscribe": "SubscribeFrame",
    "$unsubscribe": "UnsubscribeFrame",
    "$resume": "ResumeFrame",
}


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """``pattern`` as ECMA-262 reads it: its ``$`` never matches before a final newline (Python's does)."""
    if isinstance(instance, str) and not re.search(re.sub(r"\$$", r"\\Z", pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


assert jsonschema.validators.validator_for(SCHEMA) is jsonschema.Draft202012Validator
Draft2020 = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


def validator(name: str) -> jsonschema.protocols.Validator:
    """A 2020-12 validator for one definition (refs resolve inside the schema)."""
    schema = {**SCHEMA, "$ref": f"#/$defs/{name}"}
    return Draft2020(schema, format_checker=Draft2020.FORMAT_CHECKER)


CLIENT = validator("ClientFrame")
SERVER = validator("ServerMessage")


def assert_server(message: dict[str, Any]) -> None:
    """Valid as a ServerMessage and as its own type's definition (oneOf: exactly one)."""
    SERVER.validate(message)
    validator(SERVER_TYPES[message["type"]]).validate(message)


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for name in DEFS:
        validator(name)  # every definition compiles and its refs resolve
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_schema_lists_what_the_library_knows() -> None:
    assert set(DEFS["ErrorCode"]["enum"]) == set(p.ERROR_CODES)
    statuses = {
        store_requests.PENDING,
        store_requests.PROCESSING,
        store_requests.COMPLETED,
        store_requests.FAILED,
        store_requests.CANCELLED,
    }
    assert set(DEFS["RequestStatus"]["enum"]) == statuses
    assert set(SYSTEM_FRAMES) == set(p.SYSTEM_ACTIONS)
    for action, name in SYSTEM_FRAMES.items():
        assert DEFS[name]["properties"]["action"] == {"const": action}
        needs_target = "payload" in DEFS[name].get("required", [])
        assert needs_target == (action in p.NEEDS_REQUEST_ID), action
    assert DEFS["RequestFrame"]["properties"]["action"]["pattern"] == p.ACTION_RE.pattern
    published = DEFS["PublishedMessage"]["properties"]["type"]["not"]["enum"]
    assert set(published) == set(SERVER_TYPES)


def test_every_server_message_the_builders_make_validates() -> None:
    messages = [
        p.response_message("r-1", {"x": 1}),
        p.response_message("r-1", None),
        p.response_message("r-1", [1, "two"]),
        p.acknowledgment_message("r-1"),
        p.progress_message("r-1", percentage=0, message="", seq=0, at=0),
        p.progress_message("r-1", percentage=150, message="m", seq=3, metadata={"k": 1}, at=1.5),
        p.progress_message("r-1", percentage=-3, message="m", seq=4),
        p.progress_message("r-1", percentage=42.5, message="m", seq=5),
        p.complete_message("r-1", {"ok": True}),
        p.complete_message("r-1", None, at=0),
        p.status_message("r-1", status="PENDING"),
        p.status_message("r-1", status="PROCESSING", percentage=40, message="m", resumed=True),
        p.ping_message(),
        p.pong_message(),
    ]
    for code in sorted(p.ERROR_CODES):
        messages.append(p.error_message(code, "m"))
        messages.append(
            p.error_message(code, "m", request_id="r-1", details=[{"path": "a"}], retryable=False)
        )
        messages.append(p.ProtocolError(code, "m", request_id="r-2", details={"size": 3}).to_message())
    for message in messages:
        assert_server(json.loads(p.encode(message)))


def _typed_fields(cls: type) -> tuple[set[str], set[str]]:
    """(required, optional) keys of a TypedDict, NotRequired read from its annotations."""
    hints = typing.get_type_hints(cls, include_extras=True)
    optional = set(cls.__optional_keys__) | {  # type: ignore[attr-defined]
        name for name, hint in hints.items() if typing.get_origin(hint) is typing.NotRequired
    }
    return set(hints) - optional, optional


@pytest.mark.parametrize("name", [*SERVER_TYPES.values(), "ErrorDetail"])
def test_the_python_message_types_are_the_schema_s(name: str) -> None:
    """Each TypedDict of streamer.protocol has the schema's fields, and requires at least what
    the schema requires (it may require more: ``success`` is always sent on ``complete``)."""
    cls = getattr(p, name)
    definition = DEFS[name]
    required, optional = _typed_fields(cls)
    assert required | optional == set(definition["properties"])
    assert set(definition["required"]) <= required
    if "type" in definition["properties"]:
        assert typing.get_args(typing.get_type_hints(cls)["type"]) == (
            definition["properties"]["type"]["const"],
        )
    assert set(typing.get_args(p.KnownServerMessage)) == {getattr(p, n) for n in SERVER_TYPES.values()}


def test_every_status_frame_the_router_makes_validates() -> None:
    from services.router.states import outcome_frame, status_frame

    base = {
        "request_id": "r-1",
        "action": "generate_report",
        "user_id": "u",
        "tenant_id": "t",
        "connection_id": "c",
        "created_at": 1.0,
        "updated_at": 2.0,
        "ttl": 9,
    }
    records = [
        store_requests.RequestRecord(status="PENDING", **base),
        store_requests.RequestRecord(
            status="PROCESSING", progress={"percentage": 33.3, "message": "m"}, cancel_requested=True, **base
        ),
        store_requests.RequestRecord(status="COMPLETED", result={"ok": 1}, finished_at=3.0, **base),
        store_requests.RequestRecord(
            status="FAILED", error={"code": "PROCESSING_FAILED", "message": "x"}, finished_at=3.0, **base
        ),
        store_requests.RequestRecord(
            status="CANCELLED", error={"code": "CANCELLED", "message": "x"}, finished_at=3.0, **base
        ),
        store_requests.RequestRecord(status="FAILED", error={"code": "ODD", "message": "x"}, **base),
    ]
    for record in records:
        assert_server(json.loads(p.encode(status_frame(record, resumed=True, subscribed=False))))
        assert_server(json.loads(p.encode(outcome_frame(record))))


def test_published_messages_validate_and_do_not_pass_for_known_types() -> None:
    SERVER.validate({"type": "message", "text": "hi"})
    validator("PublishedMessage").validate({"type": "notice"})
    with pytest.raises(jsonschema.ValidationError):
        validator("PublishedMessage").validate({"type": "progress"})
    # A malformed known type is not rescued by the published-message branch.
    with pytest.raises(jsonschema.ValidationError):
        SERVER.validate({"type": "progress", "request_id": "r"})
    with pytest.raises(jsonschema.ValidationError):
        SERVER.validate({"type": "error", "error": {"code": "NOPE", "message": "m"}})


def test_frames_the_python_client_sends_validate() -> None:
    frames: list[dict[str, Any]] = [
        {"action": "echo", "id": "c-1", "payload": {"message": "hi"}},
        {"action": "echo", "id": "c-1", "payload": {}, "metadata": {"trace": "x"}},
        {"action": "$ping"},
        {"action": "$resume", "id": "resume-1", "payload": {}},
    ]
    for action in ("$cancel", "$status", "$subscribe", "$unsubscribe"):
        frames.append({"action": action, "id": "x-1", "payload": {"request_id": "c-1"}})
    for frame in frames:
        CLIENT.validate(frame)
        p.parse_client_frame(json.dumps(frame))
        name = SYSTEM_FRAMES.get(frame["action"], "RequestFrame")
        validator(name).validate(frame)


@pytest.mark.parametrize(
    "frame",
    [
        {},
        {"action": ""},
        {"action": "bad action"},
        {"action": "echo\n"},
        {"action": "$nope"},
        {"action": "$cancel"},
        {"action": "$cancel", "payload": {}},
        {"action": "$status", "payload": {"request_id": "has space"}},
        {"action": "echo", "id": ""},
        {"action": "echo", "id": "x" * 129},
        {"action": "echo", "id": "a\n"},
        {"action": "echo", "payload": []},
        {"action": "echo", "metadata": "m"},
        {"action": 5},
    ],
)
def test_frames_the_parser_refuses_are_invalid_by_the_schema(frame: dict[str, Any]) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_client_frame(json.dumps(frame))
    assert not CLIENT.is_valid(frame)


ids = st.one_of(st.text(max_size=6), st.from_regex(r"\A[a-z0-9-]{1,8}\Z"), st.integers(), st.none())
json_objects = st.dictionaries(
    st.sampled_from(["request_id", "id", "x", "message"]), st.one_of(ids, st.booleans()), max_size=3
)
client_frames = st.fixed_dictionaries(
    {},
    optional={
        "action": st.one_of(
            st.sampled_from([*sorted(p.SYSTEM_ACTIONS), "echo", "a.b-c_1", "$", "", "bad one"]),
            st.text(max_size=8),
        ),
        "id": ids,
        "request_id": ids,
        "payload": st.one_of(json_objects, st.lists(st.integers(), max_size=2), st.none()),
        "metadata": st.one_of(json_objects, st.text(max_size=3)),
    },
)


@settings(max_examples=400, deadline=None)
@given(client_frames)
def test_the_parser_accepts_every_frame_the_schema_allows(frame: dict[str, Any]) -> None:
    """Schema-valid ⇒ accepted; and without nulls (which only the parser tolerates),
    accepted ⇒ schema-valid for frames naming at most one id."""
    text = json.dumps(frame)
    try:
        p.parse_client_frame(text)
        accepted = True
    except p.ProtocolError:
        accepted = False
    valid = CLIENT.is_valid(frame)
    if valid:
        assert accepted, frame
    target = frame.get("payload") if isinstance(frame.get("payload"), dict) else {}
    nulls = None in frame.values() or None in target.values()
    both_ids = "id" in frame and "request_id" in frame
    loose_target = "request_id" in target and "id" in target
    if accepted and not nulls and not both_ids and not loose_target:
        assert valid, frame


# --- the docs -----------------------------------------------------------------------

_FENCE = re.compile(r"```json\n(.*?)```", re.DOTALL)


def _doc_frames() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for block in _FENCE.findall(path.read_text()):
            try:
                values = [json.loads(block)]
            except ValueError:  # one frame per line
                values = [json.loads(line) for line in block.splitlines() if line.strip()]
            for value in values:
                if isinstance(value, dict) and ("action" in value or value.get("type") in SERVER_TYPES):
                    found.append((path.name, value))
    return found


DOC_FRAMES = _doc_frames()


def test_the_docs_have_frame_examples() -> None:
    assert len(DOC_FRAMES) >= 12
    kinds = {v.get("type") or v["action"] for _, v in DOC_FRAMES}
    assert {"response", "acknowledgment", "progress", "complete", "status", "error"} <= kinds


@pytest.mark.parametrize(
    ("doc", "frame"), DOC_FRAMES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(DOC_FRAMES)]
)
def test_every_frame_example_in_the_docs_validates(doc: str, frame: dict[str, Any]) -> None:
    if "action" in frame:
        CLIENT.validate(frame)
        p.parse_client_frame(json.dumps(frame))
    else:
        assert_server(frame)


# --- AsyncAPI -------------------------------------------------------------------------


def _resolve(doc: Any, pointer: str) -> Any:
    node = doc
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for value in node.values():
            out += _refs(value)
        return out
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def test_the_asyncapi_document_references_every_frame() -> None:
    doc = yaml.safe_load(ASYNCAPI_PATH.read_text())
    assert doc["asyncapi"] == "3.0.0"
    targets: set[str] = set()
    for ref in _refs(doc):
        file, _, pointer = ref.partition("#")
        if file:
            assert file == "./streamer.schema.json", ref
            _resolve(SCHEMA, pointer)
            targets.add(pointer.rsplit("/", 1)[-1])
        else:
            _resolve(doc, pointer)
    frames = {n for n in DEFS if n.endswith(("Frame", "Message"))} - {"ClientFrame", "ServerMessage"}
    assert targets == frames
    channel = doc["channels"]["socket"]["messages"]
    operations = [m["$ref"].rsplit("/", 1)[-1] for op in doc["operations"].values() for m in op["messages"]]
    assert sorted(operations) == sorted(channel)
