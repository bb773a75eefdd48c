"""The StreamerHandler CRD: samples pass, broken documents fail, and it agrees with the
registry's parser and the operator (defaults, patterns, the status it writes)."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import jsonschema
import pytest
import yaml
from chart_render import CRD, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from streamer_operator import children, status

from streamer.registry import model

SAMPLES = sorted((ROOT / "crds" / "samples").glob("*.yaml"))
BROKEN = sorted((pathlib.Path(__file__).resolve().parent / "broken").glob("*.yaml"))
# Broken documents the registry's own parser must refuse too (the rest are about the Deployment).
MODEL_REFUSES = {
    "no-actions",
    "bad-mode",
    "bad-duration",
    "max-attempts-zero",
    "max-attempts-too-many",
    "system-action-name",
    "action-name-with-space",
    "payload-schema-not-object",
    "priority-not-integer",
    "concurrency-zero",
    "permissions-not-strings",
}


def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD.read_text()))


def version() -> dict[str, Any]:
    (only,) = crd()["spec"]["versions"]
    return dict(only)


def schema() -> dict[str, Any]:
    return dict(version()["schema"]["openAPIV3Schema"])


def spec_schema() -> dict[str, Any]:
    return dict(schema()["properties"]["spec"])


def action_schema() -> dict[str, Any]:
    return dict(spec_schema()["properties"]["actions"]["items"])


def validator() -> jsonschema.protocols.Validator:
    # OpenAPI v3 schemas are JSON Schema with extensions (x-kubernetes-*) that validators ignore.
    return jsonschema.Draft7Validator(schema())


def load(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_crd_is_what_kubectl_expects() -> None:
    c = crd()
    assert c["apiVersion"] == "apiextensions.k8s.io/v1"
    assert c["spec"]["group"] == "streamer.dev" and c["spec"]["scope"] == "Namespaced"
    names = c["spec"]["names"]
    assert names["kind"] == "StreamerHandler" and names["plural"] == "streamerhandlers"
    assert {"sh", "shandler"} <= set(names["shortNames"])
    v = version()
    assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
    assert v["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {col["name"]: col["jsonPath"] for col in v["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Endpoint"] == ".status.endpoint"
    assert columns["Actions"] == ".status.actions"
    assert columns["Age"] == ".metadata.creationTimestamp"


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        out += _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_the_schema_is_structural_and_described() -> None:
    free_form = set()
    for path, node in _walk(schema(), ""):
        if path.endswith("{}"):
            continue  # map values (resource quantities) carry no description of their own
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, f"{path} has no type"
        is_list_item = path.endswith("[]") and node.get("type") == "string"
        if path not in ("", ".apiVersion", ".kind") and not is_list_item:
            assert node.get("description"), f"{path} has no description"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            free_form.add(path)
    assert free_form == {
        ".spec.actions[].payloadSchema",
        ".spec.env[].valueFrom",
        ".spec.template.spec",  # a PodSpec: the API server validates it in the Deployment
    }


def test_defaults_and_rules_agree_with_the_parser_and_the_operator() -> None:
    spec, action = spec_schema()["properties"], action_schema()["properties"]
    assert action["name"]["pattern"] == model.ACTION_RE.pattern
    assert action["mode"]["enum"] == list(model.MODES)
    assert action["mode"]["default"] == "sync"
    assert model.parse_duration(action["timeout"]["default"]) == model.DEFAULT_TIMEOUT_SECONDS
    assert action["maxAttempts"]["default"] == model.DEFAULT_MAX_ATTEMPTS
    assert (action["maxAttempts"]["minimum"], action["maxAttempts"]["maximum"]) == (1, 100)
    assert action["priority"]["default"] == 0
    assert spec["port"]["default"] == children.DEFAULT_PORT
    assert spec["metricsPort"]["default"] == children.DEFAULT_METRICS_PORT
    assert spec["replicas"]["default"] == children.DEFAULT_REPLICAS
    scaling = spec["autoscaling"]["properties"]
    assert scaling["minReplicas"]["default"] == children.DEFAULT_MIN_REPLICAS
    assert scaling["targetCPUUtilizationPercentage"]["default"] == children.DEFAULT_TARGET_CPU
    assert spec["actions"]["x-kubernetes-list-map-keys"] == ["name"]  # the API server refuses duplicates


DURATION = action_schema()["properties"]["timeout"]["pattern"]


@settings(max_examples=300, deadline=None)
@given(st.from_regex(DURATION, fullmatch=True).filter(lambda s: len(s) >= 2))
def test_every_duration_the_crd_accepts_the_parser_reads(text: str) -> None:
    seconds = model.parse_duration(text)
    assert seconds >= 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("500ms", 0.5), ("1m30s", 90), ("2h", 7200), ("1.5s", 1.5), ("1h2m3s4ms", 3723.004)],
)
def test_usual_durations_match_the_crd(text: str, seconds: float) -> None:
    assert re.fullmatch(DURATION, text)
    assert model.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_samples_pass_the_crd_and_the_parser(path: pathlib.Path) -> None:
    for doc in load(path):
        errors = sorted(validator().iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
        specs = model.parse_handler(doc, endpoint="x:1")
        assert specs
        for spec in specs:
            if spec.payload_schema is not None:
                jsonschema.Draft202012Validator.check_schema(dict(spec.payload_schema))


def test_the_examples_sample_declares_what_the_example_handlers_declare() -> None:
    from examples.handlers.main import registry_yaml

    (doc,) = load(ROOT / "crds" / "samples" / "examples.yaml")
    declared = yaml.safe_load(registry_yaml("x:1"))["spec"]["actions"]
    assert doc["spec"]["actions"] == declared, "regenerate crds/samples/examples.yaml's actions"
    names = {s.name for s in model.parse_handler(doc, endpoint="x:1")}
    assert names == {
        "echo",
        "health",
        "ping",
        "validate_user",
        "echo_async",
        "delay",
        "generate_report",
        "process_data",
        "knowledge_query",
        "bulk_operation",
    }
    assert doc["spec"]["args"] == ["handler", "examples"]
    schemas = {s.name: s.payload_schema for s in model.parse_handler(doc, endpoint="x:1")}
    report = jsonschema.Draft202012Validator(schemas["generate_report"])
    good = {"start_date": "2024-01-01", "end_date": "2024-01-31", "format": "pdf", "report_type": "x"}
    assert report.is_valid(good)
    assert not report.is_valid({"start_date": "01/01/2024", "end_date": "2024-01-31"})
    assert not report.is_valid({**good, "format": "docx"})


def test_there_are_broken_documents() -> None:
    assert len(BROKEN) >= 15
    assert {p.stem for p in BROKEN} >= MODEL_REFUSES


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_documents_fail_the_crd(path: pathlib.Path) -> None:
    (doc,) = load(path)
    assert list(validator().iter_errors(doc)), f"{path.name} passed the CRD schema"
    if path.stem in MODEL_REFUSES:
        with pytest.raises(model.RegistryError):
            model.parse_handler(doc, endpoint="x:1")


def test_the_status_the_operator_writes_fits_the_schema() -> None:
    (doc,) = load(ROOT / "crds" / "samples" / "examples.yaml")
    doc["metadata"].update(namespace="streamer", generation=4)
    written = status.compute_status(
        doc,
        deployment={"spec": {"replicas": 2}, "status": {"replicas": 2, "readyReplicas": 1}},
        tables=status.Observation(status=True, reason="TablesExist", message="ok"),
        conflicts=["action 'echo' is already served by StreamerHandler a/b"],
        now=status.now_iso(),
    )
    status_schema = jsonschema.Draft7Validator(
        schema()["properties"]["status"], format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    errors = list(status_schema.iter_errors(written))
    assert not errors, [e.message for e in errors]
    # Without additionalProperties in the CRD, a field the schema lacks would be pruned silently.
    assert set(written) <= set(schema()["properties"]["status"]["properties"])
    for cond in written["conditions"]:
        assert set(cond) <= set(
            schema()["properties"]["status"]["properties"]["conditions"]["items"]["properties"]
        )
