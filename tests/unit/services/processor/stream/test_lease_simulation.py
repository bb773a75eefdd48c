"""The lease planning rules hold at scale: bench/lease_sim.py runs the real ``plan_leases``.

Small, seeded runs (a second or two each): shards closing and splitting, processors joining
and dying. The full-size figures (200 shards, 20 processors) are in docs/scale.md.
"""

from __future__ import annotations

import pytest

from bench import lease_sim
from bench.lease_sim import SimConfig, simulate
from services.processor.stream import shards


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rules_hold_under_splits_joins_and_deaths(seed: int) -> None:
    config = SimConfig(shards=30, workers=5, minutes=20, seed=seed)
    result = simulate(config)
    round_seconds = config.lease_seconds / 3

    assert result.deaths >= 2 and result.splits + result.rollovers >= 10  # the run did churn
    assert result.parent_before_child == 0
    assert result.final_unread == 0
    assert result.final_spread <= 1
    # A dead processor's lease expires after lease_seconds; the next round of a live one takes it.
    assert result.takeover_seconds
    assert max(result.takeover_seconds) <= config.lease_seconds + 2 * round_seconds
    assert result.longest_unread_seconds <= config.lease_seconds + 2 * round_seconds


def test_simulation_catches_a_child_read_before_its_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the parents-first rule and the simulation must notice (the test can fail)."""
    monkeypatch.setattr(shards, "parents_done", lambda lease, **_: True)
    result = simulate(SimConfig(shards=30, workers=5, minutes=20, seed=1))
    assert result.parent_before_child > 0


def test_same_seed_same_figures() -> None:
    first = simulate(SimConfig(shards=10, workers=3, minutes=5, seed=7))
    second = simulate(SimConfig(shards=10, workers=3, minutes=5, seed=7))
    assert first.rows()[:-1] == second.rows()[:-1]  # all but the wall-clock rate


def test_command_line_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert lease_sim.main(["--shards", "8", "--workers", "3", "--minutes", "4"]) == 0
    out = capsys.readouterr().out
    assert "children read before their parent finished | 0" in out
