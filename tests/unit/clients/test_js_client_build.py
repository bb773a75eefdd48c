"""clients/js is built from the schema: generated types and the committed dist/ are fresh.

Also checks protocol/asyncapi.yaml against the AsyncAPI 3.0.0 meta-schema shipped in the
npm package @asyncapi/specs (installed by ``make setup`` into clients/js/node_modules).
"""

from __future__ import annotations

import filecmp
import json
import pathlib
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ROOT = pathlib.Path(__file__).resolve().parents[3]
JS = ROOT / "clients" / "js"
MODULES = JS / "node_modules"


def node() -> str:
    found = shutil.which("node")
    assert found, "node (>= 20) is needed"
    return found


def test_the_generated_types_match_the_schema() -> None:
    run = subprocess.run(
        [node(), "scripts/gen-types.mjs", "--check"], cwd=JS, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr + run.stdout


def test_the_committed_dist_is_what_tsc_builds(tmp_path: pathlib.Path) -> None:
    tsc = MODULES / "typescript" / "bin" / "tsc"
    assert tsc.exists(), "run `make setup` (scripts/install-js.sh installs typescript)"
    run = subprocess.run(
        [node(), str(tsc), "-p", "tsconfig.json", "--outDir", str(tmp_path / "dist")],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    built = sorted(p.relative_to(tmp_path / "dist") for p in (tmp_path / "dist").rglob("*") if p.is_file())
    committed = sorted(p.relative_to(JS / "dist") for p in (JS / "dist").rglob("*") if p.is_file())
    assert built == committed, "clients/js/dist is stale: run `make js`"
    _, mismatch, errors = filecmp.cmpfiles(
        JS / "dist", tmp_path / "dist", [str(p) for p in built], shallow=False
    )
    assert not mismatch and not errors, f"clients/js/dist is stale ({mismatch + errors}): run `make js`"


def test_the_client_has_no_runtime_dependencies() -> None:
    package = json.loads((JS / "package.json").read_text())
    assert "dependencies" not in package
    assert package["type"] == "module" and package["types"] == "./dist/index.d.ts"
    lock = json.loads((JS / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"] == package["devDependencies"]
    for source in (JS / "dist").glob("*.js"):
        for line in source.read_text().splitlines():
            if line.startswith(("import ", "export ")) and " from " in line:
                assert line.rstrip(";").split(" from ")[-1].strip("\"'").startswith("./"), (source, line)


def _asyncapi_validator() -> jsonschema.protocols.Validator:
    path = MODULES / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"
    assert path.exists(), "run `make setup` (scripts/install-js.sh installs @asyncapi/specs)"
    meta: dict[str, Any] = json.loads(path.read_text())
    registry: Registry = Registry()
    for uri, definition in meta["definitions"].items():
        registry = registry.with_resource(
            uri, Resource.from_contents(definition, default_specification=DRAFT7)
        )
    return jsonschema.Draft7Validator(meta, registry=registry)


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    validator = _asyncapi_validator()
    doc = yaml.safe_load((ROOT / "protocol" / "asyncapi.yaml").read_text())
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    broken = {**doc, "operations": {"x": {"action": "listen", "channel": {"$ref": "#/channels/socket"}}}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)  # the meta-schema does check (an action that is not send/receive)
