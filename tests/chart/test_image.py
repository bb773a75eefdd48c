"""The container image definition (linted, not built: there is no Docker engine here) and the
script that installs the test tools."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import tomllib

from chart_render import HELM, ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = pathlib.Path(sys.executable).parent / "hadolint"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_hadolint_is_clean() -> None:
    result = run([tool(HADOLINT), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_with_the_streamer_entrypoint() -> None:
    steps = instructions()
    stages = [rest for kw, rest in steps if kw == "FROM"]
    assert len(stages) >= 2, "build and runtime stages"
    last_from = max(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    runtime = steps[last_from:]
    assert any(kw == "COPY" and rest.startswith("--from=build") for kw, rest in runtime)
    users = [rest for kw, rest in runtime if kw == "USER"]
    assert users, "the runtime stage must switch user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (Kubernetes runAsNonRoot checks it)"
    entrypoint = [json.loads(rest) for kw, rest in runtime if kw == "ENTRYPOINT"]
    cmd = [json.loads(rest) for kw, rest in runtime if kw == "CMD"]
    assert entrypoint[-1] == ["streamer"] and cmd[-1] == ["connect"]
    # The chart runs the same uid.
    values = (ROOT / "charts" / "streamer" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


def test_the_entrypoint_is_the_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "streamer" in project["project"]["scripts"]


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".tools", "tests"} <= ignored
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "streamer", "services", "operator"):
        assert needed not in ignored


def test_install_tools_is_idempotent() -> None:
    script = ROOT / "scripts" / "install-tools.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    tool(HELM)
    before = HELM.stat().st_mtime_ns
    result = run(["bash", str(script)])
    assert result.returncode == 0, result.stderr
    assert HELM.stat().st_mtime_ns == before, "an installed helm must not be unpacked again"
