"""The alerts, checked by the real thing: Prometheus' promtool.

The PrometheusRule is rendered by the real chart (namespace ``streamer``), and its rules are
given to ``promtool check rules`` and to ``promtool test rules`` with the unit tests in
``promtool/`` (every alert fires when it should and stays silent when it should not). The
rules themselves are generated from ``monitoring/`` by ``scripts/genrules.py``.
promtool comes from Debian's ``prometheus`` package (``scripts/install-prometheus.sh``).
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from chart_render import NAMESPACE, ROOT, Render, by_kind

PROMTOOL_TESTS = sorted((pathlib.Path(__file__).resolve().parent / "promtool").glob("*.yaml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
MONITORING = ["monitoring.coreos.com/v1"]


def _genrules() -> Any:
    spec = importlib.util.spec_from_file_location("genrules", ROOT / "scripts" / "genrules.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: run `make setup` (scripts/install-prometheus.sh)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def rules(render: Render) -> dict[str, Any]:
    (rule,) = by_kind(render(api_versions=MONITORING), "PrometheusRule").values()
    spec: dict[str, Any] = rule["spec"]
    return spec


def alerts(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rules["groups"] for r in group["rules"] if "alert" in r]


def test_the_generated_rules_are_current() -> None:
    gen = _genrules()
    assert gen.TARGET.read_text() == gen.render(), "run `python scripts/genrules.py`"


def test_every_slo_has_a_fast_and_a_slow_burn_alert(rules: dict[str, Any]) -> None:
    slos = yaml.safe_load((ROOT / "monitoring" / "slos.yaml").read_text())["slos"]
    assert {s["name"] for s in slos} >= {"sync-availability", "async-completion", "time-to-first-progress"}
    by_name = {a["alert"]: a for a in alerts(rules)}
    for slo in slos:
        fast, slow = by_name[f"{slo['alert']}FastBurn"], by_name[f"{slo['alert']}SlowBurn"]
        assert fast["labels"]["severity"] == "critical" and slow["labels"]["severity"] == "warning"
        for alert in (fast, slow):
            # two windows per burn rate, both scoped to this release
            assert alert["expr"].count(" and ") == 2, alert["expr"]
            assert f'namespace="{NAMESPACE}"' in alert["expr"]


def test_promtool_accepts_the_rendered_rules(
    promtool: str, rules: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout + result.stderr)


def test_promtool_unit_tests_pass(promtool: str, rules: dict[str, Any], tmp_path: pathlib.Path) -> None:
    (tmp_path / "streamer.full.rules.yaml").write_text(yaml.safe_dump(rules))
    bare = {
        "groups": [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in rules["groups"]
        ]
    }
    (tmp_path / "streamer.rules.yaml").write_text(yaml.safe_dump(bare))
    for test in PROMTOOL_TESTS:
        shutil.copy(test, tmp_path / test.name)
    result = subprocess.run(
        [promtool, "test", "rules", *(t.name for t in PROMTOOL_TESTS)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(PROMTOOL_TESTS), result.stdout


def test_every_alert_is_tested_firing_and_silent(rules: dict[str, Any]) -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in PROMTOOL_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test") or []:
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts(rules)}
    assert len(names) >= 20
    assert not names - fires, f"no promtool test where these fire: {sorted(names - fires)}"
    assert not names - silent, f"no promtool test where these stay silent: {sorted(names - silent)}"
    assert not (fires | silent) - names, (
        f"tests of alerts that do not exist: {sorted((fires | silent) - names)}"
    )


def test_every_alert_has_a_runbook(rules: dict[str, Any]) -> None:
    text = RUNBOOKS.read_text()
    by_anchor = {}  # an anchor's section runs to the next second-level heading
    for m in re.finditer(r'<a id="([a-z0-9-]+)"></a>', text):
        end = text.find("\n## ", m.end())
        by_anchor[m.group(1)] = text[m.end() : end if end != -1 else len(text)]
    for alert in alerts(rules):
        url = alert["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == "docs/runbooks.md", url
        assert anchor == alert["alert"].lower()
        section = by_anchor.get(anchor)
        assert section is not None, f'docs/runbooks.md has no <a id="{anchor}"></a>'
        for part in ("**What it means**", "**How to look**", "**What to do**"):
            assert part in section, f"runbook of {alert['alert']} lacks {part}"


def test_the_runbook_base_url_is_a_chart_value(render: Render) -> None:
    docs = render(
        api_versions=MONITORING, sets=["metrics.prometheusRule.runbookBaseUrl=https://wiki.example.com/rb"]
    )
    (rule,) = by_kind(docs, "PrometheusRule").values()
    for alert in alerts(rule["spec"]):
        assert alert["annotations"]["runbook_url"].startswith("https://wiki.example.com/rb#")
