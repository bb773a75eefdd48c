"""The backlog autoscaler's decision, as pure functions."""

from __future__ import annotations

from typing import Any

from streamer_operator import children
from streamer_operator.autoscale import Autoscaler, Backlog, Policy, decide, mode_of, recommend


def body(**scaling: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "h", "namespace": "ns"},
        "spec": {"image": "i", "actions": [{"name": "a"}], "autoscaling": scaling},
    }


def test_modes_and_policy_defaults() -> None:
    assert mode_of({"spec": {}}) == "none"
    assert mode_of(body(maxReplicas=3)) == "cpu"
    assert mode_of(body(maxReplicas=3, metric="backlog")) == "backlog"
    assert mode_of(body(maxReplicas=3, metric="backlog", external=True)) == "external"
    policy = Policy.of(body(minReplicas=0, maxReplicas=4, metric="backlog"))
    assert (policy.minimum, policy.maximum, policy.target) == (0, 4, 10)
    assert (policy.up_seconds, policy.down_seconds) == (0.0, 300.0)


def test_recommend_covers_backlog_and_in_flight_within_bounds() -> None:
    p = Policy(minimum=0, maximum=5, target=10)
    assert recommend(Backlog(pending=0, in_flight=0), p) == 0  # idle: to zero when allowed
    assert recommend(Backlog(pending=1, in_flight=0), p) == 1  # the first request wakes it
    assert recommend(Backlog(pending=15, in_flight=10), p) == 3
    assert recommend(Backlog(pending=1000, in_flight=0), p) == 5
    assert recommend(Backlog(pending=0, in_flight=0), Policy(minimum=2, maximum=5)) == 2


def test_stabilisation_windows() -> None:
    p = Policy(minimum=0, maximum=10, target=1, up_seconds=30, down_seconds=60)
    # Up: the lowest recommendation of the last 30 s, never below the current count.
    assert decide(2, [(0, 3), (20, 8)], now=25, policy=p) == 3
    assert decide(2, [(0, 3), (40, 8)], now=45, policy=p) == 8
    # Down: the highest of the last 60 s, never above the current count.
    assert decide(8, [(0, 6), (50, 1)], now=55, policy=p) == 6
    assert decide(8, [(0, 6), (70, 1)], now=75, policy=p) == 1
    assert decide(0, [(0, 0)], now=100, policy=p) == 0
    assert decide(5, [], now=0, policy=Policy(minimum=1, maximum=3)) == 3  # clamped


def test_the_autoscaler_remembers_recommendations_per_handler() -> None:
    now = [0.0]
    scaler = Autoscaler(clock=lambda: now[0])
    p = Policy(minimum=0, maximum=10, target=5, up_seconds=0, down_seconds=10)
    key = ("ns", "h")
    assert scaler.step(key, current=0, backlog=Backlog(pending=12, in_flight=0), policy=p) == 3
    now[0] = 5
    assert scaler.step(key, current=3, backlog=Backlog(pending=0, in_flight=0), policy=p) == 3  # within 10 s
    now[0] = 16
    assert scaler.step(key, current=3, backlog=Backlog(pending=0, in_flight=0), policy=p) == 0


def test_the_deployment_follows_the_mode() -> None:
    backlog = body(minReplicas=0, maxReplicas=4, metric="backlog")
    assert children.deployment(backlog, replicas=3)["spec"]["replicas"] == 3
    assert children.deployment(backlog)["spec"]["replicas"] == 0  # before the first reading: the minimum
    assert children.hpa(backlog) is None
    cpu = body(minReplicas=1, maxReplicas=4)
    assert "replicas" not in children.deployment(cpu)["spec"] and children.hpa(cpu) is not None
    external = body(external=True, maxReplicas=9)
    external["spec"]["replicas"] = 6  # written by HPA/KEDA through /scale
    assert children.deployment(external, replicas=1)["spec"]["replicas"] == 6
    assert children.hpa(external) is None
    assert (
        children.selector_string(external) == "app.kubernetes.io/name=streamer-handler,streamer.dev/handler=h"
    )
