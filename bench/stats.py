"""Percentiles within a run, and median/min/max across runs."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest-rank on sorted values; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclasses.dataclass
class Series:
    """One figure measured once per run: its median, min and max across the runs."""

    values: list[float] = dataclasses.field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def clean(self) -> list[float]:
        return [v for v in self.values if not math.isnan(v)]

    @property
    def median(self) -> float:
        return statistics.median(self.clean) if self.clean else math.nan

    @property
    def low(self) -> float:
        return min(self.clean) if self.clean else math.nan

    @property
    def high(self) -> float:
        return max(self.clean) if self.clean else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": _num(self.median),
            "min": _num(self.low),
            "max": _num(self.high),
            "runs": [_num(v) for v in self.values],
        }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def ratio(streamer: float, baseline: float) -> float:
    """streamer / baseline, NaN when either is missing or the baseline is 0."""
    if math.isnan(streamer) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return streamer / baseline
