"""BacklogMeter: per handler PENDING count and oldest age, this process's in-flight, zeros, failures."""

from __future__ import annotations

import types
from typing import Any

import pytest

from services.processor.backlog import BACKLOG, IN_FLIGHT, OLDEST_PENDING, BacklogMeter
from streamer.store.errors import StoreError


class FakeRequests:
    table = "unit-requests"

    def __init__(self) -> None:
        self.answer: dict[str, tuple[int, float]] | Exception = {}

    async def count_by_handler(self, status: str) -> dict[str, tuple[int, float]]:
        assert status == "PENDING"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _job(handler: str) -> Any:
    return types.SimpleNamespace(record=types.SimpleNamespace(handler=handler))


def _value(metric: Any, handler: str) -> float | None:
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels == {"queue": "unit-requests", "handler": handler}:
                return float(sample.value)
    return None


async def test_measure_publishes_counts_ages_in_flight_and_zeros() -> None:
    requests = FakeRequests()
    jobs = [_job("a"), _job("a"), _job("b")]
    meter = BacklogMeter(requests=requests, jobs=lambda: jobs, interval=1, clock=lambda: 1000.0)  # type: ignore[arg-type]
    requests.answer = {"a": (4, 990.0), "c": (1, 999.0)}
    assert await meter.measure_once() == {"a": (4, 10.0), "c": (1, 1.0)}
    assert _value(BACKLOG, "a") == 4 and _value(OLDEST_PENDING, "a") == 10.0
    assert _value(IN_FLIGHT, "a") == 2 and _value(IN_FLIGHT, "b") == 1

    requests.answer = {"c": (2, 995.0)}
    jobs.clear()
    await meter.measure_once()
    assert _value(BACKLOG, "a") == 0 and _value(OLDEST_PENDING, "a") == 0  # drained: 0, not stale
    assert _value(IN_FLIGHT, "a") == 0 and _value(IN_FLIGHT, "b") == 0

    requests.answer = StoreError("throttled")
    with pytest.raises(StoreError):
        await meter.measure_once()
    assert _value(BACKLOG, "c") is None  # no stale reading: readers fall back to the table


async def test_not_the_measuring_processor_exports_in_flight_only() -> None:
    requests = FakeRequests()
    requests.answer = {"d": (3, 990.0)}
    turn = [True]
    jobs = [_job("d")]
    meter = BacklogMeter(
        requests=requests,  # type: ignore[arg-type]
        jobs=lambda: jobs,
        interval=1,
        leader=lambda: turn[0],
        clock=lambda: 1000.0,
    )
    assert await meter.measure_once() == {"d": (3, 10.0)}
    turn[0] = False
    assert await meter.measure_once() == {}
    assert _value(BACKLOG, "d") is None and _value(IN_FLIGHT, "d") == 1
