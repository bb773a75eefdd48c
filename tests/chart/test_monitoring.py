"""Dashboards and alerts only use metrics the services export; monitoring objects are well-formed."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import sys
from typing import Any

import jsonschema
import pytest
from chart_render import CHART, FULL_VALUES, NAMESPACE, RELEASE, ROOT, Render, by_kind

EXPORTED = pathlib.Path(__file__).resolve().parent / "exported_metrics.txt"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
MONITORING = ["monitoring.coreos.com/v1"]

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def exported() -> set[str]:
    names = set()
    for line in EXPORTED.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(line)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label names, functions and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, e.g. [5m] or [$__rate_interval]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)  # dashboard variables
    text = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+|ms|[smhdwy])?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def known(name: str, allowed: set[str]) -> bool:
    if name in allowed:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in allowed and base.endswith(("_seconds", "_bytes")):
            return True
    return False


def test_the_metric_name_parser() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, mode) (rate(streamer_router_request_duration_seconds_bucket"
        '{namespace=~"$namespace",outcome!="x"}[$__rate_interval])))'
        " / clamp_min(sum(streamer_x_total), 1e-9) > 0.5"
    )
    assert metric_names(expr) == {"streamer_router_request_duration_seconds_bucket", "streamer_x_total"}
    assert metric_names('absent(up{job="a"}) or vector(0)') == {"up"}
    assert known(
        "streamer_router_request_duration_seconds_count", {"streamer_router_request_duration_seconds"}
    )
    assert not known("streamer_router_requests_total_count", {"streamer_router_requests_total"})


def dashboard_exprs() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            targets = panel.get("targets") or []
            assert targets, f"{path.name}: panel {panel['title']!r} has no query"
            for target in targets:
                out.append((path.name, panel["title"], target["expr"]))
        for variable in board["templating"]["list"]:
            query = variable.get("query")
            if isinstance(query, dict):
                query = query["query"]
            label_values = re.match(r"label_values\((\w+)", query or "")
            if label_values:
                out.append((path.name, f"variable {variable['name']}", label_values.group(1)))
    return out


def rule_exprs(render: Render) -> list[tuple[str, str]]:
    """(alert or recorded name, expr) of every rule."""
    (rule,) = by_kind(render(api_versions=MONITORING), "PrometheusRule").values()
    return [
        (r.get("alert") or r["record"], r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]
    ]


def recorded(render: Render) -> set[str]:
    (rule,) = by_kind(render(api_versions=MONITORING), "PrometheusRule").values()
    return {r["record"] for group in rule["spec"]["groups"] for r in group["rules"] if "record" in r}


def test_there_are_dashboards_and_alerts(render: Render) -> None:
    names = {p.stem for p in DASHBOARDS}
    assert names == {
        "streamer-overview", "streamer-connect", "streamer-router", "streamer-processor",
        "streamer-handlers", "streamer-operator",
    }  # fmt: skip
    assert len(dashboard_exprs()) >= 60
    assert len(rule_exprs(render)) >= 20


def test_the_generated_dashboards_are_current() -> None:
    """The JSON is written by scripts/gendashboards.py (grafana-foundation-sdk), never by hand."""
    spec = importlib.util.spec_from_file_location("gendashboards", ROOT / "scripts" / "gendashboards.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gendashboards"] = gen  # its dataclasses look their module up
    spec.loader.exec_module(gen)
    wanted = gen.render()
    assert sorted(wanted) == sorted(p.name for p in DASHBOARDS), "run `python scripts/gendashboards.py`"
    for path in DASHBOARDS:
        assert path.read_text() == wanted[path.name], (
            f"{path.name} is stale: run `python scripts/gendashboards.py`"
        )


def test_every_dashboard_panel_names_an_exported_metric(render: Render) -> None:
    allowed = exported() | recorded(render)
    for board, panel, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"{board}: {panel}: no metric in {expr!r}"
        unknown = {n for n in names if not known(n, allowed)}
        assert not unknown, f"{board}: {panel}: {sorted(unknown)} are not exported"


def test_every_alert_names_an_exported_metric(render: Render) -> None:
    allowed = exported() | recorded(render)
    for alert, expr in rule_exprs(render):
        if re.fullmatch(r"vector\([0-9.]+\)", expr):
            continue  # a constant (the SLO objectives), labelled with the namespace by the rule
        names = metric_names(expr)
        assert names, f"{alert}: no metric in {expr!r}"
        unknown = {n for n in names if not known(n, allowed)}
        assert not unknown, f"{alert}: {sorted(unknown)} are not exported"
        assert f'namespace="{NAMESPACE}"' in expr, f"{alert} is not scoped to the release namespace"
        assert "__" not in expr, f"{alert}: a placeholder was not replaced: {expr}"


def test_dashboards_are_grafana_sidecar_configmaps(render: Render) -> None:
    maps = {
        n: cm
        for n, cm in by_kind(render(), "ConfigMap").items()
        if cm["metadata"]["labels"].get("grafana_dashboard")
    }
    assert len(maps) == len(DASHBOARDS)
    uids = set()
    for cm in maps.values():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, body),) = cm["data"].items()
        assert key.endswith(".json")
        board = json.loads(body)
        assert board["title"].startswith("Streamer / ")
        uids.add(board["uid"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
    assert len(uids) == len(maps)
    assert not [cm for cm in by_kind(render(sets=["metrics.dashboards.enabled=false"]), "ConfigMap").values()
                if cm["metadata"]["labels"].get("grafana_dashboard")]  # fmt: skip


# The parts of the Prometheus Operator's CRDs this chart uses, strictly (no unknown fields).
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
        "relabelings": {"type": "array", "items": {"type": "object"}},
    },
}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
            },
        },
    },
}
_ALERT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["alert", "expr", "labels", "annotations"],
    "properties": {
        "alert": {"type": "string", "pattern": "^Streamer[A-Za-z]+$"},
        "expr": {"type": "string"},
        "for": {"type": "string", "pattern": "^[0-9]+[smh]$"},
        "labels": {
            "type": "object",
            "required": ["severity"],
            "properties": {"severity": {"enum": ["critical", "warning", "info"]}},
        },
        "annotations": {
            "type": "object",
            "required": ["summary", "description", "runbook_url"],
            "additionalProperties": {"type": "string"},
        },
    },
}
_RECORD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["record", "expr"],
    "properties": {
        "record": {"type": "string", "pattern": "^streamer:[a-z0-9_]+:[a-z0-9_]+$"},
        "expr": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string"},
                            "rules": {"type": "array", "items": {"oneOf": [_ALERT, _RECORD]}},
                        },
                    },
                }
            },
        },
    },
}


@pytest.mark.parametrize("values", [[], [str(FULL_VALUES)]], ids=["defaults", "everything"])
def test_monitoring_objects_are_well_formed(render: Render, values: list[str]) -> None:
    docs = render(values=values, api_versions=MONITORING)
    monitors = by_kind(docs, "ServiceMonitor")
    services = [d for d in docs if d["kind"] == "Service"]
    assert len(monitors) == 2
    for monitor in monitors.values():
        jsonschema.validate(monitor, SERVICE_MONITOR)
    main = monitors[f"{RELEASE}-streamer"]
    wanted = main["spec"]["selector"]["matchLabels"]
    scraped = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
    scraped_components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped}
    assert scraped_components == {"connect", "router", "processor", "operator"}
    for svc in scraped:
        assert "http" in {p["name"] for p in svc["spec"]["ports"]}, svc["metadata"]["name"]
    for rule in by_kind(docs, "PrometheusRule").values():
        jsonschema.validate(rule, PROMETHEUS_RULE)
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                # Helm must not have eaten Prometheus' own templates.
                if "$value" in r.get("annotations", {}).get("summary", ""):
                    assert "{{ $value" in r["annotations"]["summary"]


def test_handler_services_match_the_handler_service_monitor(render: Render) -> None:
    from streamer_operator import children

    handler_svc = children.service(
        {
            "metadata": {"name": "examples", "namespace": NAMESPACE, "uid": "u"},
            "spec": {"image": "i", "actions": []},
        }
    )
    (monitor,) = [m for m in by_kind(render(api_versions=MONITORING), "ServiceMonitor").values()
                  if m["metadata"]["name"].endswith("handlers")]  # fmt: skip
    wanted: dict[str, Any] = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= handler_svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in handler_svc["spec"]["ports"]}
    assert NAMESPACE in monitor["spec"]["namespaceSelector"]["matchNames"]


def test_tracing_points_every_service_at_the_collector(render: Render) -> None:
    """Off by default; with tracing.endpoint, the standard OTEL_* variables reach every service."""

    def otel(docs: list[dict[str, Any]]) -> dict[str, str]:
        (config,) = [
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{RELEASE}-streamer"
        ]
        return {k: v for k, v in config["data"].items() if k.startswith("OTEL_")}

    assert otel(render()) == {}
    assert otel(render(values=[str(FULL_VALUES)])) == {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_RESOURCE_ATTRIBUTES": f"k8s.namespace.name={NAMESPACE}",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    for component in ("connect", "router", "processor", "operator"):
        (deployment,) = [
            d
            for d in render()
            if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-streamer-{component}"
        ]
        env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": f"{RELEASE}-streamer"}} in env_from, component
