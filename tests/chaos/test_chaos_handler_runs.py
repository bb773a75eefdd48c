"""The chaos run's "concurrent runs" figure: overlaps are found, kills and sequences are not overlaps."""

from __future__ import annotations

import json
import pathlib

from chaoslib import read_handler_runs


def write(path: pathlib.Path, *lines: dict[str, object]) -> pathlib.Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"run": "cut-mid-wr')
    return path


def test_overlapping_runs_of_one_request_are_found(tmp_path: pathlib.Path) -> None:
    runs = read_handler_runs(
        write(
            tmp_path / "runs.jsonl",
            {"run": "a", "rid": "r1", "attempt": 1, "pid": 1, "start": 10.0},
            {"run": "b", "rid": "r1", "attempt": 1, "pid": 1, "start": 10.5},  # while a still runs
            {"run": "a", "rid": "r1", "pid": 1, "end": 11.0},
            {"run": "b", "rid": "r1", "pid": 1, "end": 11.5},
            {"run": "c", "rid": "r2", "attempt": 1, "pid": 1, "start": 12.0},
            {"run": "c", "rid": "r2", "pid": 1, "end": 13.0},
            {"run": "d", "rid": "r2", "attempt": 2, "pid": 1, "start": 13.0},  # after c: a retry
            {"run": "d", "rid": "r2", "pid": 1, "end": 14.0},
        )
    )
    assert runs.per_request == {"r1": 2, "r2": 2}
    assert sorted(runs.overlapping) == ["r1"]


def test_a_run_cut_by_a_handler_kill_ends_when_the_next_handler_starts(tmp_path: pathlib.Path) -> None:
    runs = read_handler_runs(
        write(
            tmp_path / "runs.jsonl",
            {"run": "a", "rid": "r1", "attempt": 1, "pid": 1, "start": 10.0},  # killed: no end
            {"run": "x", "rid": "other", "attempt": 1, "pid": 2, "start": 15.0},  # the new handler
            {"run": "b", "rid": "r1", "attempt": 2, "pid": 2, "start": 16.0},
            {"run": "b", "rid": "r1", "pid": 2, "end": 17.0},
            {"run": "c", "rid": "r3", "attempt": 1, "pid": 2, "start": 18.0},  # never ended, same process
            {"run": "d", "rid": "r3", "attempt": 1, "pid": 2, "start": 19.0},
            {"run": "d", "rid": "r3", "pid": 2, "end": 20.0},
        )
    )
    assert runs.per_request == {"r1": 2, "other": 1, "r3": 2}
    assert sorted(runs.overlapping) == ["r3"]
