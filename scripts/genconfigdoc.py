"""Write docs/configuration.md from the Settings fields (a test keeps it current)."""

from __future__ import annotations

import pathlib
import sys

from streamer.config import describe

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "configuration.md"


def render() -> str:
    lines = [
        "# Configuration",
        "",
        "Every service reads the same `STREAMER_*` variables (and `AWS_REGION`, `POD_IP`); command-line",
        "flags override them. A bad value stops the service at start with a message naming the variable.",
        "Generated from `streamer/config.py` by `scripts/genconfigdoc.py`.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{var}` | `{default}` | {doc} |" for var, default, doc in describe()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    sys.exit(0)
