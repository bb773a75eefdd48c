"""Result rows, the rich table and the JSON file.

A row is one figure for Streamer beside its baseline (both measured in the same run,
each a median over runs with min-max), the ratio Streamer/baseline, and the issue's
target for it when there is one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from bench.stats import Series, ratio

DASH = "\u2013"
TIMES = "\u00d7"

TargetKind = Literal["ratio_max", "ratio_min", "abs_max", "abs_min"]


@dataclasses.dataclass(frozen=True)
class Target:
    """``ratio_max 1.5``: Streamer/baseline ≤ 1.5; ``abs_max 50``: Streamer ≤ 50 (its unit)."""

    kind: TargetKind
    value: float

    def check(self, *, streamer: float, rate: float) -> bool | None:
        subject = rate if self.kind.startswith("ratio") else streamer
        if math.isnan(subject):
            return None
        return subject <= self.value if self.kind.endswith("max") else subject >= self.value

    def margin(self, *, streamer: float, rate: float) -> float:
        """How far from the target: >1 means missed by that factor, <1 met with room."""
        subject = rate if self.kind.startswith("ratio") else streamer
        if math.isnan(subject) or subject == 0 or self.value == 0:
            return math.nan
        return subject / self.value if self.kind.endswith("max") else self.value / subject

    def text(self) -> str:
        sign = "≤" if self.kind.endswith("max") else "≥"
        return f"{'ratio ' if self.kind.startswith('ratio') else ''}{sign} {self.value:g}"


@dataclasses.dataclass
class Row:
    scenario: str
    case: str
    metric: str
    unit: str
    streamer: Series
    baseline: Series | None = None
    baseline_name: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.baseline is None:
            return math.nan
        return ratio(self.streamer.median, self.baseline.median)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.check(streamer=self.streamer.median, rate=self.ratio)

    @property
    def margin(self) -> float:
        if self.target is None:
            return math.nan
        return self.target.margin(streamer=self.streamer.median, rate=self.ratio)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "case": self.case,
            "metric": self.metric,
            "unit": self.unit,
            "streamer": self.streamer.as_dict(),
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "baseline_name": self.baseline_name,
            "ratio": None if math.isnan(self.ratio) else round(self.ratio, 3),
            "target": self.target.text() if self.target else None,
            "met": self.met,
            "margin": None if math.isnan(self.margin) else round(self.margin, 3),
            "note": self.note,
        }


def fmt(value: float) -> str:
    if math.isnan(value):
        return DASH
    if value == 0:
        return "0"
    mag = abs(value)
    if mag >= 1000:
        return f"{value:,.0f}"
    if mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cell(series: Series | None) -> str:
    if series is None or not series.clean:
        return DASH
    if len(series.clean) == 1:
        return fmt(series.median)
    return f"{fmt(series.median)} [{fmt(series.low)}{DASH}{fmt(series.high)}]"


def verdict(row: Row) -> str:
    met = row.met
    if met is None:
        return "" if row.target is None else "n/a"
    if met:
        return "met"
    return f"MISSED {TIMES}{row.margin:.2f}" if not math.isnan(row.margin) else "MISSED"


def table(rows: Sequence[Row], *, title: str) -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for name, justify in (
        ("scenario", "left"),
        ("case", "left"),
        ("metric", "left"),
        (f"Streamer  med [min{DASH}max]", "right"),
        (f"baseline  med [min{DASH}max]", "right"),
        ("baseline", "left"),
        ("ratio", "right"),
        ("target", "left"),
        ("verdict", "left"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        style = None if r.met is not False else "red"
        t.add_row(
            r.scenario,
            r.case,
            f"{r.metric} ({r.unit})" if r.unit else r.metric,
            cell(r.streamer),
            cell(r.baseline),
            r.baseline_name,
            DASH if math.isnan(r.ratio) else f"{r.ratio:.2f}",
            r.target.text() if r.target else "",
            verdict(r),
            style=style,
        )
    return t


def markdown(rows: Sequence[Row]) -> str:
    """The same table as GitHub markdown (for docs/benchmarks.md)."""
    head = (
        f"| scenario | case | metric | Streamer med [min{DASH}max] | baseline med [min{DASH}max] "
        "| baseline | ratio | target | verdict |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r.scenario,
                    r.case,
                    f"{r.metric} ({r.unit})" if r.unit else r.metric,
                    cell(r.streamer),
                    cell(r.baseline),
                    r.baseline_name,
                    DASH if math.isnan(r.ratio) else f"{r.ratio:.2f}",
                    r.target.text() if r.target else "",
                    verdict(r),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence[Row], *, title: str) -> None:
    Console(width=200).print(table(rows, title=title))


def write_json(
    path: pathlib.Path, *, meta: dict[str, Any], rows: Sequence[Row], extra: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "rows": [r.as_dict() for r in rows], **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
