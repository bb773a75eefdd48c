"""The operator end to end against the emulator: create, update, drift, conflict, delete."""

from __future__ import annotations

from typing import Any

from operator_harness import Harness, condition, eventually, handler_body
from prometheus_client import REGISTRY
from streamer_operator import children
from streamer_operator.handlers import FINALIZER

NS = "default"


def _ready_gauge(name: str) -> float | None:
    """streamer_operator_handler_ready of one handler (the StreamerHandlerNotReady alert's input)."""
    return REGISTRY.get_sample_value("streamer_operator_handler_ready", {"handler": f"{NS}/{name}"})


async def _async(value: bool) -> bool:
    return value


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


async def test_create_builds_owned_children_and_reports_ready(operator: Harness) -> None:
    created = await operator.create(handler_body("examples", actions=["echo", "health"]))
    uid = created["metadata"]["uid"]

    deployment = await operator.wait_child(children.DEPLOYMENTS, "examples")
    service = await operator.wait_child(children.SERVICES, "examples")
    for child in (deployment, service):
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "streamer.dev/v1alpha1",
            "kind": "StreamerHandler",
            "name": "examples",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["labels"][children.MANAGED_BY_LABEL] == children.MANAGER
    container = _container(deployment)
    assert container["image"] == "streamer:test"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    assert service["spec"]["clusterIP"] == "None"
    assert await operator.child(children.HPAS, "examples") is None
    assert await operator.child(children.PDBS, "examples") is None

    # No pod is ready yet: not Ready, and the reason says why.
    pending = await operator.wait_condition("examples", "Ready", "False", reason="DeploymentNotAvailable")
    assert FINALIZER in pending["metadata"]["finalizers"]
    assert pending["status"]["endpoint"] == "examples.default.svc:50061"
    assert pending["status"]["actions"] == ["echo", "health"]
    assert pending["status"]["observedGeneration"] == 1
    assert condition(pending, "TablesReady")["status"] == "True"
    first_transition = condition(pending, "Ready")["lastTransitionTime"]
    await eventually(lambda: _async(_ready_gauge("examples") == 0), what="handler_ready 0")

    # The Deployment controller's job, done by hand: pods become ready.
    await operator.make_available("examples", ready=2)
    ready = await operator.wait_condition("examples", "Ready", "True", reason="HandlerReady")
    assert ready["status"]["readyReplicas"] == 2
    assert condition(ready, "DeploymentAvailable")["status"] == "True"
    assert condition(ready, "Ready")["lastTransitionTime"] >= first_transition
    await eventually(lambda: _async(_ready_gauge("examples") == 1), what="handler_ready 1")


async def test_spec_update_rolls_the_deployment(operator: Harness) -> None:
    await operator.create(handler_body("roll", actions=["roll.a"]))
    await operator.wait_child(children.DEPLOYMENTS, "roll")

    await operator.api.patch(
        children.HANDLERS,
        NS,
        "roll",
        {
            "spec": {
                "image": "streamer:v2",
                "env": [{"name": "FEATURE", "value": "on"}],
                "actions": [{"name": "roll.a"}, {"name": "roll.b", "mode": "async"}],
            }
        },
    )

    async def rolled() -> dict[str, Any] | None:
        dep = await operator.child(children.DEPLOYMENTS, "roll")
        return dep if dep and _container(dep)["image"] == "streamer:v2" else None

    deployment = await eventually(rolled, what="the new image in the pod template")
    assert {"name": "FEATURE", "value": "on"} in _container(deployment)["env"]

    async def status_follows() -> bool:
        obj = await operator.handler("roll")
        st = (obj or {}).get("status") or {}
        return st.get("actions") == ["roll.a", "roll.b"] and st.get("observedGeneration") == 2

    await eventually(status_follows, what="status of generation 2")

    # Autoscaling brings an HPA and (min 2 pods) a PDB; removing it takes both away.
    await operator.api.patch(
        children.HANDLERS, NS, "roll", {"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}}
    )
    hpa = await operator.wait_child(children.HPAS, "roll")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    await operator.wait_child(children.PDBS, "roll")
    await operator.api.patch(children.HANDLERS, NS, "roll", {"spec": {"autoscaling": None}})

    async def scaled_back() -> bool:
        return (
            await operator.child(children.HPAS, "roll") is None
            and await operator.child(children.PDBS, "roll") is None
        )

    await eventually(scaled_back, what="HPA and PDB removed")


async def test_children_deleted_or_edited_out_of_band_are_restored(operator: Harness) -> None:
    await operator.create(handler_body("drift", actions=["drift.a"], replicas=3))
    await operator.wait_child(children.PDBS, "drift")
    service = await operator.wait_child(children.SERVICES, "drift")

    await operator.api.delete(children.SERVICES, NS, "drift")
    restored = await operator.wait_child(children.SERVICES, "drift")
    assert restored["spec"] == service["spec"]

    await operator.api.patch(
        children.DEPLOYMENTS,
        NS,
        "drift",
        {
            "spec": {
                "replicas": 1,
                "template": {"spec": {"containers": [{"name": "handler", "image": "evil"}]}},
            }
        },
    )

    async def fixed() -> bool:
        dep = await operator.child(children.DEPLOYMENTS, "drift")
        return bool(dep and _container(dep)["image"] == "streamer:test" and dep["spec"]["replicas"] == 3)

    await eventually(fixed, what="the Deployment put back")

    await operator.api.delete(children.PDBS, NS, "drift")
    await operator.wait_child(children.PDBS, "drift")


async def test_an_action_served_by_another_handler_is_a_conflict(operator: Harness) -> None:
    first = handler_body("first", actions=["shared", "only-first"])
    first["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
    second = handler_body("second", actions=["shared", "only-second"])
    second["metadata"]["creationTimestamp"] = "2030-01-01T00:00:05Z"
    await operator.create(first)
    await operator.make_available("first")
    await operator.wait_condition("first", "Ready", "True")

    await operator.create(second)
    await operator.make_available("second")
    blocked = await operator.wait_condition("second", "Ready", "False", reason="ActionConflict")
    message = condition(blocked, "Ready")["message"]
    assert "'shared'" in message and "default/first" in message
    # The older handler keeps its action.
    assert condition(await operator.handler("first"), "Ready")["status"] == "True"

    # Once the winner is gone, the other one takes the action over.
    await operator.api.delete(children.HANDLERS, NS, "first")
    await operator.wait_condition("second", "Ready", "True", reason="HandlerReady")


async def test_delete_removes_children_and_releases_the_finalizer(operator: Harness) -> None:
    await operator.create(
        handler_body("gone", actions=["gone.a"], autoscaling={"minReplicas": 2, "maxReplicas": 3})
    )
    for ref in children.CHILD_REFS:
        await operator.wait_child(ref, "gone")
    await operator.wait_condition("gone", "Ready", "False")

    await operator.api.delete(children.HANDLERS, NS, "gone")

    async def all_gone() -> bool:
        if await operator.handler("gone") is not None:
            return False
        return all([await operator.child(ref, "gone") is None for ref in children.CHILD_REFS])

    await eventually(all_gone, what="the CR and every child deleted")
    assert _ready_gauge("gone") is None  # no series left for a deleted handler


async def test_an_object_of_someone_else_is_never_taken_over(operator: Harness) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "taken", "namespace": NS, "labels": {"app": "theirs"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]},
    }
    await operator.api.create(children.SERVICES, foreign)
    await operator.create(handler_body("taken", actions=["taken.a"]))
    blocked = await operator.wait_condition("taken", "Ready", "False", reason="ChildConflict")
    assert "Service default/taken" in condition(blocked, "Ready")["message"]
    service = await operator.child(children.SERVICES, "taken")
    assert service is not None and service["spec"]["selector"] == {"app": "theirs"}
    assert "ownerReferences" not in service["metadata"]
    assert await operator.child(children.DEPLOYMENTS, "taken") is None  # nothing half-built


async def test_a_field_removed_from_the_spec_disappears_from_the_deployment(operator: Harness) -> None:
    await operator.create(
        handler_body(
            "trim",
            actions=["trim.a"],
            command=["python", "-m", "streamer"],
            resources={"requests": {"cpu": "200m"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        )
    )

    async def has_command() -> dict[str, Any] | None:
        dep = await operator.child(children.DEPLOYMENTS, "trim")
        return dep if dep and "command" in _container(dep) else None

    deployment = await eventually(has_command, what="the command in the pod template")
    assert _container(deployment)["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}

    await operator.api.patch(
        children.HANDLERS,
        NS,
        "trim",
        {"spec": {"command": None, "resources": {"limits": {"cpu": None}}}},  # a merge patch: null removes
    )

    async def trimmed() -> dict[str, Any] | None:
        dep = await operator.child(children.DEPLOYMENTS, "trim")
        if dep is None:
            return None
        container = _container(dep)
        if "command" in container or "cpu" in container["resources"].get("limits", {}):
            return None
        return dep

    deployment = await eventually(trimmed, what="command and the CPU limit gone")
    assert _container(deployment)["args"] == ["handler", "examples"]
    assert _container(deployment)["resources"]["limits"] == {"memory": "1Gi"}


async def test_ready_waits_for_the_new_generation_to_roll_out(operator: Harness) -> None:
    await operator.create(handler_body("rollout", actions=["rollout.a"], replicas=2))
    await operator.make_available("rollout", ready=2)
    await operator.wait_condition("rollout", "Ready", "True")

    await operator.api.patch(children.HANDLERS, NS, "rollout", {"spec": {"image": "streamer:v2"}})

    async def new_template() -> dict[str, Any] | None:
        dep = await operator.child(children.DEPLOYMENTS, "rollout")
        return dep if dep and _container(dep)["image"] == "streamer:v2" else None

    deployment = await eventually(new_template, what="the new image in the Deployment")
    assert deployment["metadata"]["generation"] == 2
    # The Deployment controller has not caught up: not Ready, but still routed to.
    pending = await operator.wait_condition("rollout", "Ready", "False", reason="RolloutPending")
    assert condition(pending, "Serving")["status"] == "True"
    assert condition(pending, "RolledOut")["status"] == "False"

    # Half-way: one new pod, one old one.
    await operator.api.patch(
        children.DEPLOYMENTS,
        NS,
        "rollout",
        {"status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3}},
        sub="status",
    )
    await operator.wait_condition("rollout", "Ready", "False", reason="RolloutInProgress")

    await operator.make_available("rollout", ready=2)
    done = await operator.wait_condition("rollout", "Ready", "True", reason="HandlerReady")
    assert condition(done, "RolledOut")["status"] == "True"
