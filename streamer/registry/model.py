"""What the registry knows about an action, read from ``StreamerHandler`` documents.

The same document shape serves the cluster (a CR whose ``status.endpoint`` the
operator writes) and the local stack (a YAML file whose documents carry the
endpoint themselves), so both registry sources share this parser.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

API_VERSION = "streamer.dev/v1alpha1"
KIND = "StreamerHandler"
ACTION_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MODES = ("sync", "async", "auto")
QUEUE_MODES = ("shared", "dedicated")
_DURATION_RE = re.compile(
    r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$"
)

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_ATTEMPTS = 3


class RegistryError(ValueError):
    """A StreamerHandler document is invalid; the message says where."""


def parse_duration(value: Any, *, where: str = "duration") -> float:
    """Seconds from ``"1m30s"``, ``"500ms"``, ``"5s"``, ``"2h"`` or a plain number."""
    if isinstance(value, bool):
        raise RegistryError(f"{where}: expected a duration like '5s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise RegistryError(f"{where}: must not be negative")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{where}: expected a duration like '5s', got {value!r}")
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return parse_duration(number, where=where)
    match = _DURATION_RE.match(text)
    if not match or not any(match.groups()):
        raise RegistryError(f"{where}: expected a duration like '5s', '1m30s' or '500ms', got {value!r}")
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionSpec:
    """One action: where its handler is and how to call it."""

    name: str
    handler: str
    namespace: str = ""
    endpoint: str = ""
    mode: str = "sync"
    estimated_duration: float = 0.0
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    required_permissions: tuple[str, ...] = ()
    payload_schema: Mapping[str, Any] | None = None
    concurrency: int | None = None
    priority: int = 0
    description: str = ""
    #: ``shared`` (the common requests table) or ``dedicated`` (the handler's own).
    queue: str = "shared"
    #: The dedicated queue's requests table (``status.queue.table``); "" for the shared one.
    queue_table: str = ""

    def is_async(self, *, threshold: float) -> bool:
        """Whether a request of this action is queued: ``auto`` goes async only *over* the threshold."""
        if self.mode == "async":
            return True
        if self.mode == "sync":
            return False
        return self.estimated_duration > threshold

    @property
    def schema_json(self) -> str:
        return json.dumps(self.payload_schema or {}, sort_keys=True)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise RegistryError(message)


def parse_handler(doc: Mapping[str, Any], *, endpoint: str | None = None) -> list[ActionSpec]:
    """The actions of one StreamerHandler document.

    ``endpoint`` overrides ``status.endpoint``. Raises :class:`RegistryError` with the
    path of the first bad field.
    """
    _require(isinstance(doc, Mapping), "document: expected a mapping")
    _require(doc.get("kind") == KIND, f"kind: expected {KIND!r}, got {doc.get('kind')!r}")
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    _require(isinstance(name, str) and bool(name), "metadata.name: required")
    where = f"{KIND} {name}"
    spec = doc.get("spec") or {}
    _require(isinstance(spec, Mapping), f"{where}: spec must be a mapping")
    status = doc.get("status") or {}
    ep = endpoint or (status.get("endpoint") if isinstance(status, Mapping) else None) or ""
    concurrency = spec.get("concurrency")
    _require(
        concurrency is None or (isinstance(concurrency, int) and concurrency > 0),
        f"{where}: spec.concurrency must be a positive integer",
    )
    queue = spec.get("queue") or {}
    _require(isinstance(queue, Mapping), f"{where}: spec.queue must be a mapping")
    queue_mode = queue.get("mode", "shared")
    _require(queue_mode in QUEUE_MODES, f"{where}: spec.queue.mode: expected one of {QUEUE_MODES}")
    queue_table = ""
    if queue_mode == "dedicated" and isinstance(status, Mapping):
        # Written by the operator once the table exists (or by the local stack's file).
        queue_status = status.get("queue") or {}
        queue_table = str(queue_status.get("table") or "") if isinstance(queue_status, Mapping) else ""
    actions = spec.get("actions")
    if not isinstance(actions, list) or not actions:
        raise RegistryError(f"{where}: spec.actions must be a non-empty list")
    assert isinstance(name, str)
    out: list[ActionSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(actions):
        at = f"{where}: spec.actions[{i}]"
        _require(isinstance(raw, Mapping), f"{at}: expected a mapping")
        aname = raw.get("name")
        _require(
            isinstance(aname, str) and bool(ACTION_RE.match(aname)),
            f"{at}.name: must match {ACTION_RE.pattern}",
        )
        _require(not aname.startswith("$"), f"{at}.name: '$' actions are reserved")
        _require(aname not in seen, f"{at}.name: {aname!r} listed twice")
        seen.add(aname)
        mode = raw.get("mode", "sync")
        _require(mode in MODES, f"{at}.mode: expected one of {MODES}, got {mode!r}")
        max_attempts = raw.get("maxAttempts", DEFAULT_MAX_ATTEMPTS)
        _require(
            isinstance(max_attempts, int) and not isinstance(max_attempts, bool) and 1 <= max_attempts <= 100,
            f"{at}.maxAttempts: expected an integer 1-100",
        )
        perms = raw.get("requiredPermissions", []) or []
        _require(
            isinstance(perms, list) and all(isinstance(p, str) for p in perms),
            f"{at}.requiredPermissions: expected a list of strings",
        )
        schema = raw.get("payloadSchema")
        _require(schema is None or isinstance(schema, Mapping), f"{at}.payloadSchema: expected an object")
        priority = raw.get("priority", 0)
        _require(
            isinstance(priority, int) and not isinstance(priority, bool),
            f"{at}.priority: expected an integer",
        )
        timeout = parse_duration(raw.get("timeout", DEFAULT_TIMEOUT_SECONDS), where=f"{at}.timeout")
        _require(timeout > 0, f"{at}.timeout: must be greater than 0")
        out.append(
            ActionSpec(
                name=aname,
                handler=name,
                namespace=str(meta.get("namespace") or ""),
                endpoint=ep,
                mode=mode,
                estimated_duration=parse_duration(
                    raw.get("estimatedDuration", 0), where=f"{at}.estimatedDuration"
                ),
                timeout=timeout,
                max_attempts=max_attempts,
                required_permissions=tuple(perms),
                payload_schema=dict(schema) if schema is not None else None,
                concurrency=concurrency,
                priority=priority,
                description=str(raw.get("description", "")),
                queue=queue_mode,
                queue_table=queue_table,
            )
        )
    return out


def build_index(docs: Iterable[Mapping[str, Any]]) -> tuple[dict[str, ActionSpec], list[str]]:
    """Actions by name from many documents, plus conflict messages.

    The first document (in the given order) to claim an action keeps it; later claims
    are reported as conflicts, the same rule the operator applies (``ActionConflict``).
    """
    index: dict[str, ActionSpec] = {}
    conflicts: list[str] = []
    for doc in docs:
        for spec in parse_handler(doc):
            other = index.get(spec.name)
            if other is not None and (other.handler, other.namespace) != (spec.handler, spec.namespace):
                conflicts.append(
                    f"action {spec.name!r} of {spec.handler} is already served by {other.handler}"
                )
                continue
            index[spec.name] = spec
    return index, conflicts
