"""Status rules: conditions, transition times, conflicts, spec problems, rivals."""

from __future__ import annotations

from typing import Any

from streamer_operator import status
from streamer_operator.handlers import rivals
from streamer_operator.reconciler import claimable, spec_problem

OK_TABLES = status.Observation(status=True, reason="TablesExist")


def doc(
    name: str, actions: list[str], *, created: str = "", ns: str = "default", **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}", "generation": 3}
    if created:
        meta["creationTimestamp"] = created
    meta.update(extra.pop("meta", {}))
    return {
        "apiVersion": "streamer.dev/v1alpha1",
        "kind": "StreamerHandler",
        "metadata": meta,
        "spec": {"image": "i", "actions": [{"name": a} for a in actions]},
        **extra,
    }


def ready_deployment(n: int = 1, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": n},
        "status": {
            "observedGeneration": generation,
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
        },
    }


def test_ready_when_everything_holds() -> None:
    st = status.compute_status(
        doc("a", ["x"]), deployment=ready_deployment(2), tables=OK_TABLES, conflicts=[], now="T1"
    )
    assert st["endpoint"] == "a.default.svc:50061"
    assert st["actions"] == ["x"]
    assert (st["replicas"], st["readyReplicas"], st["observedGeneration"]) == (2, 2, 3)
    conds = {c["type"]: c for c in st["conditions"]}
    assert [c["type"] for c in st["conditions"]] == [
        "Ready",
        "Serving",
        "DeploymentAvailable",
        "RolledOut",
        "TablesReady",
    ]
    assert conds["Ready"] == {
        "type": "Ready",
        "status": "True",
        "reason": "HandlerReady",
        "message": "router and processor route to this handler",
        "lastTransitionTime": "T1",
        "observedGeneration": 3,
    }
    assert status.is_ready({"status": st})


def test_reasons_in_order_of_precedence() -> None:
    def ready(**kw: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "deployment": ready_deployment(),
            "tables": OK_TABLES,
            "conflicts": [],
            "now": "T",
        }
        args.update(kw)
        st = status.compute_status(doc("a", ["x"]), **args)
        return dict(status.get_condition(st, "Ready") or {})

    assert ready(invalid="bad")["reason"] == "InvalidSpec"
    assert ready(invalid="bad", conflicts=["c"])["reason"] == "InvalidSpec"
    assert ready(child_conflict="Service x", conflicts=["c"])["reason"] == "ChildConflict"
    assert ready(conflicts=["c"], deployment=None)["reason"] == "ActionConflict"
    assert ready(deployment=None)["reason"] == "DeploymentNotAvailable"
    assert ready(deployment={"spec": {"replicas": 1}, "status": {}})["reason"] == "DeploymentNotAvailable"
    failed = status.Observation(status=False, reason="EnsureFailed", message="boom")
    assert ready(tables=failed) == {**ready(tables=failed), "status": "False", "reason": "TablesNotReady"}
    pending = status.Observation(status=None, reason="Pending")
    assert ready(tables=pending)["status"] == "Unknown"


def test_ready_waits_for_the_rollout_while_serving_goes_on() -> None:
    def conds(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
        st = status.compute_status(
            doc("a", ["x"]), deployment=deployment, tables=OK_TABLES, conflicts=[], now="T"
        )
        return {c["type"]: c for c in st["conditions"]}

    assert conds(ready_deployment(2))["Ready"]["status"] == "True"
    # A new generation the Deployment controller has not seen yet.
    unseen = ready_deployment(2)
    unseen["metadata"]["generation"] = 2
    got = conds(unseen)
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("False", "RolloutPending")
    assert got["Serving"]["status"] == "True"  # the old pods still answer: keep routing
    # Seen, half of the pods updated; then all updated but an old one still running.
    half = ready_deployment(2)
    half["status"]["updatedReplicas"] = 1
    assert conds(half)["Ready"]["reason"] == "RolloutInProgress"
    assert "1 of 2" in conds(half)["RolledOut"]["message"]
    surge = ready_deployment(2)
    surge["status"]["replicas"] = 3
    assert "old pod" in conds(surge)["RolledOut"]["message"]
    unavailable = ready_deployment(2)
    unavailable["status"]["availableReplicas"] = 1
    assert conds(unavailable)["Ready"]["reason"] == "RolloutInProgress"
    stuck = ready_deployment(2)
    stuck["status"]["updatedReplicas"] = 1
    stuck["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "slow"}
    ]
    assert conds(stuck)["Ready"]["reason"] == "ProgressDeadlineExceeded"
    assert conds(stuck)["Serving"]["status"] == "True"


def test_deployment_observation_reasons() -> None:
    b = doc("a", ["x"])
    assert status.deployment_observation(b, None).reason == "DeploymentNotFound"
    assert status.deployment_observation(b, {"spec": {"replicas": 0}}).reason == "ScaledToZero"
    assert status.deployment_observation(b, {"spec": {"replicas": 2}}).reason == "NoReadyReplicas"
    assert status.deployment_observation(b, ready_deployment()).status is True


def test_transition_time_moves_only_when_status_flips() -> None:
    first = status.compute_status(doc("a", ["x"]), deployment=None, tables=OK_TABLES, conflicts=[], now="T1")
    b = doc("a", ["x"], status=first)
    # Still not ready, for another reason: the time stays.
    second = status.compute_status(b, deployment=None, tables=OK_TABLES, conflicts=["taken"], now="T2")
    cond = status.get_condition(second, "Ready")
    assert cond is not None and cond["reason"] == "ActionConflict" and cond["lastTransitionTime"] == "T1"
    # Now ready: the time moves.
    third = status.compute_status(
        doc("a", ["x"], status=second),
        deployment=ready_deployment(),
        tables=OK_TABLES,
        conflicts=[],
        now="T3",
    )
    assert (status.get_condition(third, "Ready") or {})["lastTransitionTime"] == "T3"
    assert (status.get_condition(third, "TablesReady") or {})["lastTransitionTime"] == "T1"
    assert not status.status_changed(third, third)
    assert status.status_changed(second, third)


def test_oldest_claimant_keeps_an_action() -> None:
    old = doc("old", ["x", "y"], created="2030-01-01T00:00:00Z")
    new = doc("new", ["x", "z"], created="2030-01-02T00:00:00Z")
    assert status.action_conflicts(old, others=[old, new]) == []
    (message,) = status.action_conflicts(new, others=[old, new])
    assert message == "action 'x' is already served by StreamerHandler default/old"


def test_ties_are_broken_by_namespace_and_name_and_the_deleted_claim_nothing() -> None:
    a = doc("a", ["x"], created="2030-01-01T00:00:00Z")
    b = doc("b", ["x"], created="2030-01-01T00:00:00Z")
    assert status.action_conflicts(a, others=[b]) == []
    assert len(status.action_conflicts(b, others=[a])) == 1
    going = doc(
        "a", ["x"], created="2030-01-01T00:00:00Z", meta={"deletionTimestamp": "2030-01-03T00:00:00Z"}
    )
    assert status.action_conflicts(b, others=[going]) == []
    invalid = doc("a", ["x"], created="2000-01-01T00:00:00Z")
    invalid["spec"]["actions"][0]["mode"] = "never"
    assert status.action_conflicts(b, others=[invalid]) == []


def test_spec_problems() -> None:
    assert spec_problem(doc("fine", ["x"])) is None
    assert "DNS-1035" in (spec_problem(doc("Bad_Name", ["x"])) or "")
    assert "DNS-1035" in (spec_problem(doc("a" * 64, ["x"])) or "")
    no_image = doc("a", ["x"])
    no_image["spec"]["image"] = " "
    assert spec_problem(no_image) == "spec.image is required"
    scaling = doc("a", ["x"])
    scaling["spec"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 2}
    assert "maxReplicas" in (spec_problem(scaling) or "")
    dup = doc("a", ["x", "x"])
    assert "listed twice" in (spec_problem(dup) or "")


def test_claimable_children() -> None:
    b = doc("a", ["x"])
    mine = {
        "metadata": {"ownerReferences": [{"kind": "StreamerHandler", "uid": "uid-a", "controller": True}]}
    }
    orphan = {
        "metadata": {
            "labels": {"app.kubernetes.io/managed-by": "streamer-operator", "streamer.dev/handler": "a"},
            "ownerReferences": [{"kind": "StreamerHandler", "uid": "old-uid", "controller": True}],
        }
    }
    foreign = {"metadata": {"labels": {"app": "a"}}}
    assert claimable(mine, b) and claimable(orphan, b) and not claimable(foreign, b)


def test_rivals_share_an_action_or_are_blocked() -> None:
    me = doc("me", ["x"])
    sharing = doc("sharing", ["x"])
    blocked = doc("blocked", ["q"], status={"conditions": [{"type": "Ready", "reason": "ActionConflict"}]})
    unrelated = doc("unrelated", ["u"])
    assert rivals(me, [me, sharing, blocked, unrelated]) == [("default", "sharing"), ("default", "blocked")]
