"""streamer.delivery's pure part: the circuit breaker (its backoff is streamer.retry's, tested there)."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.config import load_settings
from streamer.delivery import Delivery, _Breaker


def delivery(**kwargs: Any) -> Delivery:
    # The store is not touched by the pure parts.
    return Delivery(store=None, settings=load_settings({}), **kwargs)  # type: ignore[arg-type]


def test_breaker_opens_after_threshold_and_half_opens_after_reset() -> None:
    breaker = _Breaker()
    assert breaker.failed(0.0, threshold=3, reset=30.0) is False
    assert breaker.failed(1.0, threshold=3, reset=30.0) is False
    assert breaker.allows(1.0)
    assert breaker.failed(2.0, threshold=3, reset=30.0) is True  # opened now
    assert not breaker.allows(2.0)
    assert not breaker.allows(31.9)
    assert breaker.allows(32.0)  # one trial
    assert breaker.failed(32.0, threshold=3, reset=30.0) is True  # the trial failed: open again
    assert not breaker.allows(33.0)
    breaker.succeeded()
    assert breaker.allows(33.0)
    assert breaker.failed(34.0, threshold=3, reset=30.0) is False  # counting starts over


def test_a_success_resets_the_count() -> None:
    breaker = _Breaker()
    breaker.failed(0.0, threshold=3, reset=30.0)
    breaker.failed(0.0, threshold=3, reset=30.0)
    breaker.succeeded()
    assert breaker.failed(0.0, threshold=3, reset=30.0) is False


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        delivery(attempts=0)


async def test_a_final_frames_connection_lookup_is_tried_again_when_the_store_fails() -> None:
    """A store failure says nothing about the connection: a final frame's lookup tries again
    (a progress frame's does not: the next one comes soon)."""
    from types import SimpleNamespace

    from streamer.store.errors import StoreError

    calls = 0

    async def get(connection_id: str) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise StoreError("throttled")
        return SimpleNamespace(connection_id=connection_id, endpoint="pod:1")

    d = delivery(base_delay=0.01, max_delay=0.02)
    d.store = SimpleNamespace(connections=SimpleNamespace(get=get))  # type: ignore[assignment]
    assert await d._lookup("c1") is None and calls == 1
    assert await d._lookup("c2", final=True) == "pod:1" and calls == 3
