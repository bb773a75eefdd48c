"""Run Python code in a child interpreter where some libraries cannot be imported.

For the install-extra tests (``tests/unit/streamer/test_light_install.py``, the backend
extra's): what a user's environment without those libraries would see.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]

_PRELUDE = """
import importlib.abc, sys
BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Block())

def leaked():
    return sorted(m for m in sys.modules if m.split(".")[0] in {{b.split(".")[0] for b in BLOCKED}})
"""


def run_without(
    blocked: Sequence[str], body: str, *, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``body`` with every module in ``blocked`` (and its submodules) unimportable.

    ``body`` may call ``leaked()``: the blocked modules that got imported anyway (none, if the
    finder did its job and nothing caught the error to carry on regardless).
    """
    script = _PRELUDE.format(blocked=tuple(blocked)) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
