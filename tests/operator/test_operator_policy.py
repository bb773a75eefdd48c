"""No confused deputy: Secrets and ServiceAccounts outside the allow-lists are refused."""

from __future__ import annotations

from typing import Any

from operator_harness import Api, Cluster, condition, eventually, handler_body, run_operator
from streamer_operator import children
from streamer_operator.options import OperatorOptions

NS = "default"

OPTIONS = OperatorOptions(
    resync_seconds=0.5,
    manage_tables=False,
    allowed_secrets=("handler-*",),
    denied_secrets=("handler-jwt",),
    allowed_service_accounts=("handler-sa",),
)


async def test_a_forbidden_secret_or_service_account_is_refused(cluster: Cluster, api: Api) -> None:
    async with run_operator(cluster, api, options=OPTIONS) as operator:
        jwt = [{"name": "JWT", "valueFrom": {"secretKeyRef": {"name": "streamer-jwt", "key": "jwt-secret"}}}]
        await operator.create(handler_body("thief", actions=["thief.a"], env=jwt))
        refused = await operator.wait_condition("thief", "Ready", "False", reason="ForbiddenReference")
        message = condition(refused, "Ready")["message"]
        assert "Secret 'streamer-jwt' is not in the operator's allow-list" in message
        assert condition(refused, "Serving")["reason"] == "ForbiddenReference"
        assert await operator.child(children.DEPLOYMENTS, "thief") is None  # nothing built

        await operator.create(
            handler_body(
                "mimic",
                actions=["mimic.a"],
                template={"spec": {"serviceAccountName": "streamer-processor"}},
            )
        )
        refused = await operator.wait_condition("mimic", "Ready", "False", reason="ForbiddenReference")
        assert "ServiceAccount 'streamer-processor'" in condition(refused, "Ready")["message"]

        # A deny wins over a matching allow glob.
        reserved = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "handler-jwt", "key": "k"}}}]
        await operator.create(handler_body("sneaky", actions=["sneaky.a"], env=reserved))
        refused = await operator.wait_condition("sneaky", "Ready", "False", reason="ForbiddenReference")
        assert "reserved for Streamer itself" in condition(refused, "Ready")["message"]

        # Fixing the spec lets it through.
        allowed = [{"name": "JWT", "valueFrom": {"secretKeyRef": {"name": "handler-keys", "key": "k"}}}]
        await operator.api.patch(children.HANDLERS, NS, "thief", {"spec": {"env": allowed}})
        await operator.wait_child(children.DEPLOYMENTS, "thief")
        await operator.make_available("thief")
        await operator.wait_condition("thief", "Ready", "True")


async def test_the_pod_template_reaches_the_deployment_and_leaves_it_again(
    cluster: Cluster, api: Api
) -> None:
    async with run_operator(cluster, api, options=OPTIONS) as operator:
        template = {
            "metadata": {"annotations": {"team": "search"}},
            "spec": {
                "serviceAccountName": "handler-sa",
                "imagePullSecrets": [{"name": "handler-regcred"}],
                "nodeSelector": {"pool": "gpu"},
                "containers": [{"name": "proxy", "image": "envoy:1"}],
            },
        }
        await operator.create(handler_body("tmpl", actions=["tmpl.a"], template=template))

        async def merged() -> dict[str, Any] | None:
            dep = await operator.child(children.DEPLOYMENTS, "tmpl")
            return dep if dep and len(dep["spec"]["template"]["spec"]["containers"]) == 2 else None

        pod = (await eventually(merged, what="the sidecar in the Deployment"))["spec"]["template"]
        assert pod["metadata"]["annotations"]["team"] == "search"
        assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
        assert pod["spec"]["serviceAccountName"] == "handler-sa"

        # Dropping the annotation and the node selector removes them (server-side apply).
        await operator.api.patch(
            children.HANDLERS,
            NS,
            "tmpl",
            {"spec": {"template": {"metadata": {"annotations": None}, "spec": {"nodeSelector": None}}}},
        )

        async def trimmed() -> dict[str, Any] | None:
            dep = await operator.child(children.DEPLOYMENTS, "tmpl")
            pod = (dep or {}).get("spec", {}).get("template", {})
            if not pod or "team" in pod["metadata"].get("annotations", {}) or "nodeSelector" in pod["spec"]:
                return None
            return pod

        pod = await eventually(trimmed, what="annotation and nodeSelector removed")
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
