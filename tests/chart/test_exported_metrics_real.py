"""The metric list the dashboards and alerts are checked against is what the services export.

tests/chart/test_monitoring.py checks every panel and alert against
exported_metrics.txt; this test ties that list to the real registries: every name in it
must be registered by importing the services' own metric definitions, so a renamed
metric breaks the build instead of a dashboard.
"""

from __future__ import annotations

import importlib
import pathlib

from prometheus_client import REGISTRY

EXPORTED = pathlib.Path(__file__).resolve().parent / "exported_metrics.txt"
MODULES = [
    "services.connect.metrics",
    "services.connect.service",
    "services.router.middleware",
    "services.router.publish",
    "services.router.submit",
    "services.processor.metrics",
    "services.processor.backlog",
    "streamer.delivery",
    "streamer.auth",
    "streamer.callers",
    "streamer.sdk.server",
    "streamer_operator.reconciler",
    "streamer_operator.autoscale",
]


def real_names() -> set[str]:
    for module in MODULES:
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
    return names


def test_every_listed_metric_is_really_exported() -> None:
    listed = {
        line.strip()
        for line in EXPORTED.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    real = real_names()
    missing = sorted(listed - real)
    assert not missing, f"listed in exported_metrics.txt but exported by no service: {missing}"


def test_every_service_metric_follows_the_naming_rule() -> None:
    for name in real_names():
        if name.startswith("streamer_"):
            assert not name.endswith("_total_total"), name
            assert "__" not in name, name
