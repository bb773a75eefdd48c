"""The Helm chart: lint, render, strict Kubernetes validation, and what the manifests promise."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate.utils as kv
import pytest
import yaml
from chart_render import CHART, CRD, FULL_VALUES, NAMESPACE, RELEASE, Render, by_kind, name, run

from streamer.config import load_settings

MONITORING = ["monitoring.coreos.com/v1"]
# The newest Kubernetes kubernetes-validate knows, and the oldest the chart supports.
VERSIONS = sorted({kv.latest_version(), "1.30.0"})


def full(render: Render) -> list[dict[str, Any]]:
    return render(values=[str(FULL_VALUES)], api_versions=MONITORING)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
    return list(spec["containers"])


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("values", [[], [str(FULL_VALUES)]], ids=["defaults", "everything"])
def test_helm_lint_is_clean(helm: str, values: list[str]) -> None:
    cmd = [helm, "lint", "--strict", str(CHART)]
    for v in values:
        cmd += ["-f", v]
    result = run(cmd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


MINIMAL = ["operator.enabled=false", "config.handlerNamespace=handlers", "networkPolicy.enabled=false"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", ["defaults", "everything", "minimal"])
def test_rendered_manifests_pass_strict_validation(render: Render, variant: str, version: str) -> None:
    if variant == "defaults":
        docs = render()
    elif variant == "everything":
        docs = full(render)
    else:
        docs = render(sets=MINIMAL)
    custom = {"ServiceMonitor", "PrometheusRule"}  # CRDs of the Prometheus Operator: checked below
    checked = 0
    for doc in docs:
        if doc["kind"] in custom:
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} is invalid for {version}: {exc.message}")
        checked += 1
    assert checked >= (15 if variant == "minimal" else 25)


def test_every_optional_part_renders(render: Render) -> None:
    kinds = {d["kind"] for d in full(render)}
    assert kinds >= {
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Ingress",
        "ServiceMonitor",
        "PrometheusRule",
        "Pod",
    }
    deployments = by_kind(full(render), "Deployment")
    assert set(deployments) == {name(c) for c in ("connect", "router", "processor", "operator", "dynamodb")}


def test_monitoring_objects_follow_the_api_or_the_switch(render: Render) -> None:
    def kinds(**kw: Any) -> set[str]:
        return {d["kind"] for d in render(**kw)}

    assert not kinds() & {"ServiceMonitor", "PrometheusRule"}
    assert kinds(api_versions=MONITORING) >= {"ServiceMonitor", "PrometheusRule"}
    forced = ["metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"]
    assert kinds(sets=forced) >= {"ServiceMonitor", "PrometheusRule"}
    off = ["metrics.serviceMonitor.enabled=false", "metrics.prometheusRule.enabled=false"]
    assert not kinds(sets=off, api_versions=MONITORING) & {"ServiceMonitor", "PrometheusRule"}


def test_the_charts_crd_is_the_crd_and_helm_upgrade_keeps_it_current(render: Render) -> None:
    # A template (not crds/, which Helm installs once and never upgrades), kept on uninstall.
    assert not (CHART / "crds").exists()
    assert (CHART / "files" / "crds" / "streamerhandlers.yaml").read_bytes() == CRD.read_bytes()
    crds = by_kind(render(), "CustomResourceDefinition")
    # kopf's peering CRDs come along (two operator replicas by default), kept as well.
    assert set(crds) == {
        "streamerhandlers.streamer.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    assert all(c["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"} for c in crds.values())
    crd = crds["streamerhandlers.streamer.dev"]
    assert crd["spec"] == yaml.safe_load(CRD.read_text())["spec"]  # nothing lost in the round trip
    assert not by_kind(render(sets=["crds.install=false"]), "CustomResourceDefinition")
    single = render(sets=["operator.replicas=1"])
    assert set(by_kind(single, "CustomResourceDefinition")) == {"streamerhandlers.streamer.dev"}
    (op,) = containers(by_kind(single, "Deployment")[name("operator")])
    assert "STREAMER_OPERATOR_PEERING" not in env_of(op)
    peered = by_kind(render(), "Deployment")[name("operator")]
    assert peered["spec"]["replicas"] == 2 and peered["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env_of(containers(peered)[0])["STREAMER_OPERATOR_PEERING"] == f"{RELEASE}-streamer"


def test_the_values_schema_accepts_global(helm: str) -> None:
    result = run([helm, "template", RELEASE, str(CHART), "--set", "global.imageRegistry=example.com"])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variant", ["defaults", "everything"])
def test_every_pod_is_locked_down_probed_and_sized(render: Render, variant: str) -> None:
    docs = render() if variant == "defaults" else full(render)
    pods = [d for d in docs if d["kind"] in ("Deployment", "Pod")]
    assert pods
    for doc in pods:
        spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in containers(doc):
            where = f"{doc['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where
            if doc["kind"] == "Deployment":
                assert "readinessProbe" in c and "livenessProbe" in c, where


def test_service_probes_and_ports_follow_the_conventions(render: Render) -> None:
    deployments = by_kind(render(), "Deployment")
    for component in ("connect", "router", "processor", "operator"):
        (c,) = containers(deployments[name(component)])
        assert c["args"][0] == component
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == 9090
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        env = env_of(c)
        assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert env["STREAMER_HTTP_PORT"] == "9090"
    (connect,) = containers(deployments[name("connect")])
    env = env_of(connect)
    assert env["STREAMER_WS_PORT"] == "8080" and env["STREAMER_GRPC_PORT"] == "50051"
    assert env["STREAMER_ROUTER_ADDRESS"] == f"{name('router')}.{NAMESPACE}.svc:50052"
    (router,) = containers(deployments[name("router")])
    assert env_of(router)["STREAMER_GRPC_PORT"] == "50052"
    config = by_kind(render(), "ConfigMap")[f"{RELEASE}-streamer"]["data"]
    assert config["STREAMER_TABLE_PREFIX"] == "streamer" and config["AWS_REGION"] == "us-east-1"
    assert "STREAMER_DYNAMODB_ENDPOINT" not in config  # AWS unless told otherwise
    router_svc = by_kind(render(), "Service")[name("router")]
    assert {p["name"]: p["port"] for p in router_svc["spec"]["ports"]}["grpc"] == 50052
    # Direct dispatch: the router offers to every ready processor pod behind a headless Service.
    offers_svc = by_kind(render(), "Service")[f"{name('processor')}-offers"]
    assert offers_svc["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in offers_svc["spec"]["ports"]}["grpc"] == 50053
    assert (
        env_of(router)["STREAMER_PROCESSOR_ADDRESSES"] == f"{name('processor')}-offers.{NAMESPACE}.svc:50053"
    )
    (processor,) = containers(deployments[name("processor")])
    assert env_of(processor)["STREAMER_GRPC_PORT"] == "50053"


def test_secrets_and_existing_secrets(render: Render) -> None:
    docs = full(render)
    secrets = by_kind(docs, "Secret")
    assert set(secrets) == {name("jwt"), name("aws")}
    (connect,) = containers(by_kind(docs, "Deployment")[name("connect")])
    env = env_of(connect)
    assert env["STREAMER_JWT_SECRET"]["secretKeyRef"]["name"] == name("jwt")
    assert env["STREAMER_JWT_PUBLIC_KEY"]["secretKeyRef"]["name"] == name("jwt")
    assert env["STREAMER_JWKS_URL"] == "https://auth.example.com/.well-known/jwks.json"
    assert (
        env["STREAMER_JWT_ISSUER"] == "https://auth.example.com/"
        and env["STREAMER_JWT_AUDIENCE"] == "streamer"
    )
    assert {"secretRef": {"name": name("aws")}} in connect["envFrom"]
    assert {m["mountPath"] for m in connect["volumeMounts"]} == {"/tmp", "/etc/streamer/tls"}
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-streamer"]["data"]
    assert config["STREAMER_DYNAMODB_ENDPOINT"] == f"http://{name('dynamodb')}.{NAMESPACE}.svc:8000"
    assert config["STREAMER_WS_RATE_LIMIT"] == "50"
    # Only connect verifies tokens: nobody else gets the JWT secret.
    for component in ("router", "processor", "operator"):
        (c,) = containers(by_kind(docs, "Deployment")[name(component)])
        assert "STREAMER_JWT_SECRET" not in env_of(c)

    existing = render(sets=["jwt.existingSecret=my-jwt", "aws.existingSecret=my-aws"])
    assert not by_kind(existing, "Secret")
    (c,) = containers(by_kind(existing, "Deployment")[name("connect")])
    assert env_of(c)["STREAMER_JWT_SECRET"]["secretKeyRef"] == {
        "name": "my-jwt",
        "key": "jwt-secret",
        "optional": True,
    }
    assert {"secretRef": {"name": "my-aws"}} in c["envFrom"]


def test_caller_policy_and_service_token(render: Render) -> None:
    docs = full(render)
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-streamer"]["data"]
    assert json.loads(config["STREAMER_CALLER_POLICY"]) == {
        "billing": {"rpcs": ["Publish", "Submit"], "tenants": ["acme"]},
        "ops": {"rpcs": ["*"]},
        "streamer-connect": {"rpcs": ["Route"]},  # connect may always Route
    }
    load_settings({"STREAMER_CALLER_POLICY": config["STREAMER_CALLER_POLICY"]})  # the router accepts it
    deployments = by_kind(docs, "Deployment")
    for component in ("connect", "router"):
        (c,) = containers(deployments[name(component)])
        ref = env_of(c)["STREAMER_SERVICE_TOKEN_SECRET"]["secretKeyRef"]
        assert ref == {"name": "streamer-service-token", "key": "service-token-secret"}
    (connect,) = containers(deployments[name("connect")])
    assert env_of(connect)["STREAMER_SERVICE_NAME"] == "streamer-connect"
    for component in ("processor", "operator"):
        (c,) = containers(deployments[name(component)])
        assert "STREAMER_SERVICE_TOKEN_SECRET" not in env_of(c)
    # By default: no policy, no token.
    defaults = render()
    assert "STREAMER_CALLER_POLICY" not in by_kind(defaults, "ConfigMap")[f"{RELEASE}-streamer"]["data"]
    (router,) = containers(by_kind(defaults, "Deployment")[name("router")])
    assert "STREAMER_SERVICE_TOKEN_SECRET" not in env_of(router)


def _rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc.get("rules") or [])


def test_rbac_is_least_privilege(render: Render) -> None:
    for docs in (render(), full(render)):
        roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
        for role in roles:
            for rule in _rules(role):
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
                assert "secrets" not in rule["resources"]
                if "pods" in rule["resources"]:
                    # Only the operator, only reading: its backlog autoscaler finds the processors'
                    # /metrics by pod IP. Pod specs tell it nothing its Deployments do not.
                    assert role["metadata"]["name"] == name("operator"), role["metadata"]["name"]
                    assert rule == {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
        bound = {
            s["name"]
            for d in docs
            if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
            for s in d["subjects"]
        }
        assert name("connect") not in bound  # connect has no API access at all
    reader = by_kind(render(sets=["operator.clusterWide=true"]), "ClusterRole")[
        f"{RELEASE}-streamer-registry-reader"
    ]
    assert _rules(reader) == [
        {"apiGroups": ["streamer.dev"], "resources": ["streamerhandlers"], "verbs": ["get", "list", "watch"]}
    ]
    # Watching given namespaces: the operator's write access is namespaced, cluster-wide it only reads.
    docs = full(render)
    (cluster_role,) = by_kind(docs, "ClusterRole").values()
    for rule in _rules(cluster_role):
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    operator_roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == name("operator")]
    assert sorted(r["metadata"]["namespace"] for r in operator_roles) == ["handlers", "team-a"]
    deployments = by_kind(docs, "Deployment")
    assert deployments[name("connect")]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    (op,) = containers(deployments[name("operator")])
    assert op["args"] == ["operator", "--namespace", "handlers", "--namespace", "team-a"]
    accounts = by_kind(docs, "ServiceAccount")
    assert accounts[name("connect")]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/streamer-connect"
    }
    assert name("processor") not in accounts  # create: false
    processor_spec = deployments[name("processor")]["spec"]["template"]["spec"]
    assert processor_spec["serviceAccountName"] == "shared-processor"


def _release_pods(peers: list[dict[str, Any]]) -> bool:
    return all(
        set(p) == {"podSelector"} and p["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
        for p in peers
    )


def test_only_streamer_pods_reach_grpc_ports(render: Render) -> None:
    policies = by_kind(render(), "NetworkPolicy")
    grpc_rules = {
        pname: rule
        for pname, policy in policies.items()
        for rule in policy["spec"]["ingress"]
        if any(port["port"] == "grpc" for port in rule.get("ports", []))
    }
    assert set(grpc_rules) == {name("connect"), name("router"), name("handlers"), name("processor")}
    for pname, rule in grpc_rules.items():
        assert rule.get("from") and _release_pods(rule["from"]), pname
    components = {
        pname: {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]}
        for pname, rule in grpc_rules.items()
    }
    assert components[name("connect")] == {"router", "processor"}
    assert components[name("router")] == {"connect", "processor"}
    assert components[name("handlers")] == {"router", "processor"}
    assert components[name("processor")] == {"router"}  # Processor.Offer (direct dispatch)
    # Every policy covers exactly one workload and only restricts ingress.
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert not by_kind(render(sets=["networkPolicy.enabled=false"]), "NetworkPolicy")


def test_hpa_and_pdb(render: Render) -> None:
    default = render()
    assert not by_kind(default, "HorizontalPodAutoscaler")
    assert set(by_kind(default, "PodDisruptionBudget")) == {
        name(c) for c in ("connect", "router", "processor")
    }
    docs = full(render)
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {name(c) for c in ("connect", "router", "processor")}
    assert (hpas[name("connect")]["spec"]["minReplicas"], hpas[name("connect")]["spec"]["maxReplicas"]) == (
        3,
        12,
    )
    assert "replicas" not in by_kind(docs, "Deployment")[name("connect")]["spec"]
    single = render(sets=["connect.replicas=1", "router.replicas=1", "processor.replicas=1"])
    assert not by_kind(single, "PodDisruptionBudget")


def test_values_schema_refuses_mistakes(helm: str) -> None:
    for bad in (
        "connect.replicas=-1",
        "typo=1",
        "metrics.serviceMonitor.enabled=maybe",
        "config.logLevel=LOUD",
    ):
        result = run([helm, "template", RELEASE, str(CHART), "--set", bad])
        assert result.returncode != 0, bad
        assert "schema" in result.stderr, result.stderr
    result = run([helm, "template", RELEASE, str(CHART), "--set", "tls.enabled=true"])
    assert result.returncode != 0, "tls without a Secret must be refused"


def test_notes_render(helm: str) -> None:
    result = run(
        [helm, "install", RELEASE, str(CHART), "--dry-run=client", "-n", NAMESPACE, "--set", "jwt.secret=x"]
    )
    assert result.returncode == 0, result.stderr
    assert "ws://127.0.0.1:8080/ws" in result.stdout
    assert "streamerhandlers" in result.stdout
    bare = run([helm, "install", RELEASE, str(CHART), "--dry-run=client", "-n", NAMESPACE])
    assert "no JWT key is configured" in bare.stdout


def test_the_default_scope_is_the_release_namespace(render: Render) -> None:
    docs = render()
    roles = by_kind(docs, "Role")
    assert roles[name("operator")]["metadata"]["namespace"] == NAMESPACE
    assert roles[f"{RELEASE}-streamer-registry-reader"]["metadata"]["namespace"] == NAMESPACE
    (cluster_role,) = by_kind(docs, "ClusterRole").values()  # the operator's discovery only
    for rule in _rules(cluster_role):
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    (op,) = containers(by_kind(docs, "Deployment")[name("operator")])
    assert op["args"] == ["operator", "--namespace", NAMESPACE]
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-streamer"]
    assert config["data"]["STREAMER_NAMESPACE"] == NAMESPACE
    # Cluster-wide only when asked.
    wide = render(sets=["operator.clusterWide=true"])
    (op,) = containers(by_kind(wide, "Deployment")[name("operator")])
    assert op["args"] == ["operator"]
    assert "STREAMER_NAMESPACE" not in by_kind(wide, "ConfigMap")[f"{RELEASE}-streamer"]["data"]
    assert name("operator") in by_kind(wide, "ClusterRoleBinding")


def test_allow_lists_reach_the_operator_and_the_admission_policy(render: Render) -> None:
    docs = render(sets=["operator.allowedSecrets={handler-*,regcred}", "jwt.secret=x"])
    (op,) = containers(by_kind(docs, "Deployment")[name("operator")])
    env = env_of(op)
    assert env["STREAMER_OPERATOR_ALLOWED_SECRETS"] == "handler-*,regcred"
    assert env["STREAMER_OPERATOR_ALLOWED_SERVICE_ACCOUNTS"] == ""  # none by default
    assert f"{NAMESPACE}/{RELEASE}-streamer-jwt" in env["STREAMER_OPERATOR_DENIED_SECRETS"].split(",")
    assert f"{NAMESPACE}/{name('processor')}" in env["STREAMER_OPERATOR_DENIED_SERVICE_ACCOUNTS"].split(",")
    (policy,) = by_kind(docs, "ValidatingAdmissionPolicy").values()
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["allowedSecrets"] == '["^handler-.*$","^regcred$"]'
    assert variables["allowedAccounts"] == "[]"
    (binding,) = by_kind(docs, "ValidatingAdmissionPolicyBinding").values()
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]
    assert selector["values"] == [NAMESPACE]
    off = render(sets=["operator.admissionPolicy.enabled=false"])
    assert not by_kind(off, "ValidatingAdmissionPolicy")
