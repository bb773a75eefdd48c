"""streamer.delivery's pure parts: backoff with jitter and the circuit breaker."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.config import load_settings
from streamer.delivery import Delivery, _Breaker


def delivery(**kwargs: Any) -> Delivery:
    # The store is not touched by the pure parts.
    return Delivery(store=None, settings=load_settings({}), **kwargs)  # type: ignore[arg-type]


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    d = delivery(base_delay=0.1, max_delay=5.0)
    for attempt, nominal in [(0, 0.1), (1, 0.2), (2, 0.4), (5, 3.2), (6, 5.0), (20, 5.0)]:
        samples = [d.backoff(attempt) for _ in range(500)]
        assert min(samples) >= nominal * 0.75 - 1e-9
        assert max(samples) <= nominal * 1.25 + 1e-9
        assert max(samples) - min(samples) > nominal * 0.2  # there is jitter


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
