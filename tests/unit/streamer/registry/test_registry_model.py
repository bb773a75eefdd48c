"""StreamerHandler documents -> action specs, shared by every registry source."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.registry.model import ActionSpec, RegistryError, build_index, parse_duration, parse_handler


def doc(name: str = "examples", actions: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "streamer.dev/v1alpha1",
        "kind": "StreamerHandler",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"actions": actions if actions is not None else [{"name": "echo", "mode": "sync"}], **spec},
        "status": {"endpoint": "127.0.0.1:50061"},
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("500ms", 0.5), ("1m30s", 90), ("2h", 7200), (3, 3), ("2.5", 2.5), ("1m", 60)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 seconds", "-1", -1, True, None, "1x"])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(RegistryError):
        parse_duration(bad)


def test_parse_full_action() -> None:
    (spec,) = parse_handler(
        doc(
            actions=[
                {
                    "name": "report",
                    "mode": "auto",
                    "estimatedDuration": "10s",
                    "timeout": "1m",
                    "maxAttempts": 5,
                    "requiredPermissions": ["reports:write"],
                    "payloadSchema": {"type": "object"},
                    "priority": 2,
                }
            ],
            concurrency=4,
        )
    )
    assert spec == ActionSpec(
        name="report",
        handler="examples",
        namespace="default",
        endpoint="127.0.0.1:50061",
        mode="auto",
        estimated_duration=10,
        timeout=60,
        max_attempts=5,
        required_permissions=("reports:write",),
        payload_schema={"type": "object"},
        concurrency=4,
        priority=2,
    )


def test_auto_threshold_boundary() -> None:
    at = ActionSpec(name="a", handler="h", mode="auto", estimated_duration=5.0)
    over = ActionSpec(name="a", handler="h", mode="auto", estimated_duration=5.001)
    assert not at.is_async(threshold=5.0)
    assert over.is_async(threshold=5.0)
    assert ActionSpec(name="a", handler="h", mode="async").is_async(threshold=5)
    assert not ActionSpec(name="a", handler="h", mode="sync", estimated_duration=99).is_async(threshold=5)


@pytest.mark.parametrize(
    "actions",
    [
        [],
        [{"name": "bad name"}],
        [{"name": "$cancel"}],
        [{"name": "a", "mode": "later"}],
        [{"name": "a", "maxAttempts": 0}],
        [{"name": "a", "timeout": "0s"}],
        [{"name": "a"}, {"name": "a"}],
        [{"name": "a", "requiredPermissions": "x"}],
    ],
)
def test_invalid_documents(actions: list[dict[str, Any]]) -> None:
    with pytest.raises(RegistryError):
        parse_handler(doc(actions=actions))


def test_conflicts_keep_the_first() -> None:
    index, conflicts = build_index([doc("one"), doc("two")])
    assert index["echo"].handler == "one"
    assert conflicts and "already served by one" in conflicts[0]
