"""The typed server messages of streamer.protocol make mypy catch a frame with a missing or
misspelt field (what a ``dict[str, Any]`` let through): mypy run on a snippet, as `make lint` runs it."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_mypy_refuses_frames_with_missing_or_unknown_fields(tmp_path: pathlib.Path) -> None:
    snippet = tmp_path / "frames.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from streamer.protocol import ErrorMessage, KnownServerMessage, error_message, status_message


            def send(message: KnownServerMessage) -> None: ...


            missing: ErrorMessage = {"type": "error", "request_id": "r"}
            send(status_message("r", status="PENDING", resumd=True))
            send({"type": "complete", "request_id": "r", "result": 1})
            send(error_message("TIMEOUT", "late", request_id="r"))
            """
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(snippet),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["8", "9", "10"], run.stdout + run.stderr
    assert 'Missing key "error"' in errors[0]
    assert '"resumd"' in errors[1]
