"""The soak: many sockets, mixed traffic, bounded memory and descriptors, no stray error.

``test_soak_short`` (in ``make test``): 200 connections for about 12 s.
``test_soak_long`` (``make chaos``): 2,000 connections for 10 minutes; writes its
figures to docs/reliability.md. See :mod:`soaklib` for the traffic and the bounds.
"""

from __future__ import annotations

import datetime
import pathlib

import pytest
from chaoslib import write_section
from soaklib import (
    DYNAMODB_POOL,
    FD_CLOSED_SLACK,
    FD_GROWTH_SLACK,
    RSS_GROWTH_FACTOR,
    RSS_GROWTH_SLACK_KIB,
    SoakConfig,
    SoakFigures,
    run_soak,
)


def check(figures: SoakFigures, config: SoakConfig) -> None:
    assert not figures.unexpected, (dict(figures.unexpected), figures.examples[:10])
    assert not figures.error_log_lines, figures.error_log_lines[:5]
    # A few sockets may be between a close and a reopen (the reconnect operation) at that moment.
    assert figures.active_at_end >= config.connections * 0.99, figures.active_at_end
    assert not figures.bound_violations(), figures.bound_violations()
    for kind in ("ping", "echo", "echo_async", "malformed", "reconnect"):
        assert figures.operations[kind] > 0, figures.operations
    assert figures.expected_errors["VALIDATION_ERROR"] == figures.operations["malformed"]


def report(figures: SoakFigures, capsys: pytest.CaptureFixture[str], title: str) -> None:
    with capsys.disabled():
        print(f"\n\nsoak ({title}):\n{figures.table()}\n")
        for line in figures.examples[:10]:
            print("  problem:", line)


@pytest.mark.timeout(110)
async def test_soak_short(dynamodb: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = SoakConfig(connections=200, seconds=12.0, period=2.0, warmup=3.0, users_per_tenant=10)
    figures = await run_soak(config, dynamodb=dynamodb, run_dir=tmp_path)
    report(figures, capsys, "short")
    check(figures, config)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_soak_long(dynamodb: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = SoakConfig()
    figures = await run_soak(config, dynamodb=dynamodb, run_dir=tmp_path)
    report(figures, capsys, "long")
    when = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_section(
        "soak-figures",
        f"Latest `make chaos` soak ({when}):\n\n{figures.table()}\n\n"
        "Bounds checked: from *start* to *end* (every socket open both times) RSS may grow at most "
        f"{RSS_GROWTH_FACTOR:g}x + {RSS_GROWTH_SLACK_KIB // 1024} MiB and descriptors at most "
        f"+{FD_GROWTH_SLACK}; a few seconds after every socket closed, connect's descriptors are "
        f"within +{FD_CLOSED_SLACK} of idle plus the DynamoDB client's pool ({DYNAMODB_POOL}).\n",
    )
    check(figures, config)
