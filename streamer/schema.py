"""Payload validation with JSON Schema (Draft 2020-12), shared by router and handler SDK.

The router checks a payload against the registry's ``payloadSchema`` before a request
is queued, and the handler SDK checks it again before running it. Both must agree on
what is valid and on how a failure is reported, so both use this module: one
validator per schema (compiled once, cached), formats such as ``date`` and ``email``
enforced, and failures reported as ``[{"path": "a.b[0]", "message": ...}]``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as _JsonSchemaError

__all__ = ["MAX_REPORTED_ERRORS", "SchemaError", "check_schema", "format_path", "payload_errors", "validator"]

#: At most this many failures are reported for one payload (a huge bad array must
#: not produce a huge error frame).
MAX_REPORTED_ERRORS = 20


def format_path(parts: Iterable[Any]) -> str:
    """``["a", "b", 0]`` as ``"a.b[0]"``; the empty path (the payload itself) is ``""``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise :class:`SchemaError` when ``schema`` is not a valid Draft 2020-12 schema."""
    Draft202012Validator.check_schema(dict(schema))


@functools.lru_cache(maxsize=1024)
def _compiled(schema_json: str) -> Draft202012Validator:
    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    """A compiled validator for ``schema`` (cached by the schema's content)."""
    return _compiled(json.dumps(schema, sort_keys=True, separators=(",", ":")))


def _entries(error: _JsonSchemaError) -> list[dict[str, str]]:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        # Name the missing property itself: "user.email", not "user".
        missing = [p for p in error.validator_value if p not in error.instance]
        return [
            {"path": format_path([*path, name]), "message": f"'{name}' is a required property"}
            for name in missing
        ]
    return [{"path": format_path(path), "message": error.message}]


def payload_errors(schema: Mapping[str, Any] | None, payload: Any) -> list[dict[str, str]]:
    """Every way ``payload`` fails ``schema`` (empty when valid or when there is no schema).

    Sorted by path, then message, so the same payload always gets the same answer;
    at most :data:`MAX_REPORTED_ERRORS` entries.
    """
    if not schema:
        return []
    found: list[dict[str, str]] = []
    for error in validator(schema).iter_errors(payload):
        found.extend(_entries(error))
        if len(found) >= MAX_REPORTED_ERRORS * 4:
            break
    unique = {(e["path"], e["message"]): e for e in found}
    return [unique[k] for k in sorted(unique)][:MAX_REPORTED_ERRORS]
