"""Rendering the Helm chart with the real helm binary (scripts/install-tools.sh puts it in
.tools/bin). A missing binary fails the tests: nothing here is skipped silently."""

from __future__ import annotations

import functools
import pathlib
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "streamer"
CRD = ROOT / "crds" / "streamerhandlers.yaml"
FULL_VALUES = pathlib.Path(__file__).resolve().parent / "values-full.yaml"
HELM = ROOT / ".tools" / "bin" / "helm"
RELEASE = "demo"
NAMESPACE = "streamer"

Render = Callable[..., list[dict[str, Any]]]


def tool(path: pathlib.Path) -> str:
    if not (path.is_file() and path.stat().st_mode & 0o111):
        pytest.fail(f"{path} is missing: run `make tools` (scripts/install-tools.sh)", pytrace=False)
    return str(path)


@pytest.fixture(scope="session")
def helm() -> str:
    return tool(HELM)


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@functools.lru_cache(maxsize=32)
def _render(helm: str, values: tuple[str, ...], sets: tuple[str, ...], api_versions: tuple[str, ...]) -> str:
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    for v in values:
        cmd += ["-f", v]
    for s in sets:
        cmd += ["--set", s]
    for a in api_versions:
        cmd += ["--api-versions", a]
    result = run(cmd)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """``render(values=[...], sets=[...], api_versions=[...])`` → the rendered documents."""

    def do(
        *,
        values: list[str] | None = None,
        sets: list[str] | None = None,
        api_versions: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        text = _render(helm, tuple(values or ()), tuple(sets or ()), tuple(api_versions or ()))
        return [doc for doc in yaml.safe_load_all(text) if doc]

    return do


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def name(component: str) -> str:
    return f"{RELEASE}-streamer-{component}"


def which(binary: str) -> str:
    found = shutil.which(binary)
    if not found:
        pytest.fail(f"{binary} is not on PATH", pytrace=False)
    return found
