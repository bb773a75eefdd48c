"""The pure builders of a StreamerHandler's children."""

from __future__ import annotations

from typing import Any

from streamer_operator import children


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "streamer.dev/v1alpha1",
        "kind": "StreamerHandler",
        "metadata": {"name": "examples", "namespace": "team", "uid": "u-1"},
        "spec": {"image": "streamer:1", "actions": [{"name": "echo"}], **spec},
    }


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


def test_deployment_is_locked_down_and_probed_on_the_grpc_port() -> None:
    dep = children.deployment(body(port=6000, metricsPort=7000))
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == children.RUN_AS_USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": 6000}
    assert {"name": "grpc", "containerPort": 6000, "protocol": "TCP"} in c["ports"]
    assert {"name": "metrics", "containerPort": 7000, "protocol": "TCP"} in c["ports"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["STREAMER_GRPC_PORT"]["value"] == "6000"
    assert env["STREAMER_HTTP_PORT"]["value"] == "7000"
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "7000"


def test_defaults_apply_without_an_api_server_defaulting() -> None:
    dep = children.deployment(body())
    c = container(dep)
    assert dep["spec"]["replicas"] == 1
    assert c["readinessProbe"]["grpc"]["port"] == children.DEFAULT_PORT
    assert c["resources"] == children.DEFAULT_RESOURCES
    assert "command" not in c and "args" not in c and "imagePullPolicy" not in c
    assert children.endpoint(body()) == "examples.team.svc:50061"


def test_user_env_overrides_by_name_and_keeps_value_from() -> None:
    dep = children.deployment(
        body(
            concurrency=7,
            env=[
                {"name": "STREAMER_HTTP_PORT", "value": "9999"},
                {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
        )
    )
    env = container(dep)["env"]
    names = [e["name"] for e in env]
    assert names.count("STREAMER_HTTP_PORT") == 1
    assert {"name": "STREAMER_HTTP_PORT", "value": "9999"} in env
    assert {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}} in env
    assert {"name": "STREAMER_HANDLER_CONCURRENCY", "value": "7"} in env


def test_resources_are_strings_and_service_account_enables_its_token() -> None:
    dep = children.deployment(
        body(resources={"limits": {"cpu": 1, "memory": "1Gi"}}, serviceAccountName="thumbs")
    )
    assert container(dep)["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "thumbs"
    assert "automountServiceAccountToken" not in pod


def test_autoscaling_leaves_replicas_to_the_hpa_and_adds_a_pdb() -> None:
    b = body(
        replicas=4, autoscaling={"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 55}
    )
    dep = children.deployment(b)
    assert "replicas" not in dep["spec"]
    hpa = children.hpa(b)
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "examples",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 55
    pdb = children.pdb(b)
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == children.selector_labels(b)


def test_pdb_only_with_more_than_one_pod() -> None:
    assert children.pdb(body()) is None
    assert children.pdb(body(replicas=1)) is None
    assert children.pdb(body(replicas=2)) is not None
    assert children.pdb(body(autoscaling={"minReplicas": 1, "maxReplicas": 5})) is None
    assert children.hpa(body()) is None


def test_service_is_headless_with_named_ports() -> None:
    svc = children.service(body(port=6000))
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == children.selector_labels(body())
    assert svc["spec"]["ports"][0] == {
        "name": "grpc",
        "port": 6000,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }


def test_every_child_is_owned_and_labelled() -> None:
    b = body(autoscaling={"minReplicas": 2, "maxReplicas": 3})
    for ref, obj in children.desired(b).items():
        assert obj is not None, ref
        meta = obj["metadata"]
        assert (meta["name"], meta["namespace"]) == ("examples", "team")
        assert meta["labels"][children.MANAGED_BY_LABEL] == children.MANAGER
        assert meta["ownerReferences"] == [children.owner_reference(b)]
        assert children.owned_by(obj, b)
        assert children.owner_key(obj) == ("team", "examples")
        assert obj["apiVersion"] == ref.api_version and obj["kind"] == ref.kind
    other = {"metadata": {"uid": "u-2", "name": "examples", "namespace": "team"}}
    assert not children.owned_by(children.service(b), other)


def test_is_subset_ignores_server_defaults_but_sees_edits() -> None:
    wanted = children.deployment(body())
    live: dict[str, Any] = {
        **wanted,
        "status": {"readyReplicas": 1},
        "metadata": {**wanted["metadata"], "resourceVersion": "9", "uid": "x"},
    }
    live["spec"] = {**wanted["spec"], "progressDeadlineSeconds": 600}
    assert children.is_subset(wanted, live)
    edited = {**live, "spec": {**live["spec"], "replicas": 5}}
    assert not children.is_subset(wanted, edited)
    assert not children.is_subset({"a": [1, 2]}, {"a": [1]})
    assert not children.is_subset({"a": {"b": 1}}, {"a": 1})
    assert children.is_subset({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}]})


def test_paths() -> None:
    assert children.DEPLOYMENTS.path("ns", "n") == "/apis/apps/v1/namespaces/ns/deployments/n"
    assert children.SERVICES.path("ns") == "/api/v1/namespaces/ns/services"
    assert (
        children.HANDLERS.path("ns", "n", "status")
        == "/apis/streamer.dev/v1alpha1/namespaces/ns/streamerhandlers/n/status"
    )


def test_termination_grace_follows_the_longest_action_timeout() -> None:
    short = children.deployment(body())  # one action, default timeout 30s
    env = {e["name"]: e.get("value") for e in container(short)["env"]}
    assert env["STREAMER_DRAIN_SECONDS"] == str(30 + children.DRAIN_MARGIN_SECONDS)
    assert short["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == (
        30 + children.DRAIN_MARGIN_SECONDS + children.GRACE_MARGIN_SECONDS
    )
    long = children.deployment(
        body(actions=[{"name": "a", "timeout": "5s"}, {"name": "b", "timeout": "10m"}, {"name": "c"}])
    )
    env = {e["name"]: e.get("value") for e in container(long)["env"]}
    assert env["STREAMER_DRAIN_SECONDS"] == str(600 + children.DRAIN_MARGIN_SECONDS)
    grace = long["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == 600 + children.DRAIN_MARGIN_SECONDS + children.GRACE_MARGIN_SECONDS
    # Quick actions still get the kubelet's usual 30 s.
    quick = children.deployment(body(actions=[{"name": "a", "timeout": "1s"}]))
    assert quick["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == children.MIN_GRACE_SECONDS


def test_an_applied_object_is_applied_again_only_when_it_changes_or_drifts() -> None:
    wanted = children.deployment(body(command=["python"]))
    assert children.needs_apply(wanted, None)
    live = {**children.with_applied_hash(wanted), "status": {"readyReplicas": 1}}
    assert not children.needs_apply(wanted, live)
    # A field removed from the spec changes the hash: the whole object is applied again.
    assert children.needs_apply(children.deployment(body()), live)
    # Someone edited a field we own: applied again.
    drifted = {**live, "spec": {**live["spec"], "replicas": 7}}
    assert children.needs_apply(wanted, drifted)
    assert children.applied_hash(wanted) == children.applied_hash(children.with_applied_hash(wanted))


def test_the_pod_template_is_merged_into_the_handler_pod() -> None:
    template = {
        "metadata": {
            "labels": {"team": "a", "streamer.dev/handler": "hijack"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": {
            "imagePullSecrets": [{"name": "regcred"}],
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
            "topologySpreadConstraints": [
                {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
            ],
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
            "containers": [
                {"name": "handler", "volumeMounts": [{"name": "models", "mountPath": "/models"}]},
                {"name": "proxy", "image": "envoy:1"},
            ],
        },
    }
    dep = children.deployment(body(template=template))
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["metadata"]["labels"]["streamer.dev/handler"] == "examples"  # the selector stays
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"][0]["key"] == "gpu"
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert spec["topologySpreadConstraints"][0]["maxSkew"] == 2
    assert [v["name"] for v in spec["volumes"]] == ["tmp", "models"]
    handler, proxy = spec["containers"]
    assert handler["image"] == "streamer:1"  # still ours, with the extra mount
    assert [m["mountPath"] for m in handler["volumeMounts"]] == ["/tmp", "/models"]
    assert proxy == {"name": "proxy", "image": "envoy:1"}
    assert dep["spec"]["selector"]["matchLabels"]["streamer.dev/handler"] == "examples"


def test_a_dedicated_queue_processor_reads_only_its_table_and_passes_the_network_policies() -> None:
    from streamer_operator import queue
    from streamer_operator.options import OperatorOptions

    b = body(queue={"mode": "dedicated", "processors": {"replicas": 3}})
    options = OperatorOptions(
        processor_image="streamer:2",
        processor_secret="aws",
        processor_pod_labels=(
            ("app.kubernetes.io/instance", "rel"),
            ("app.kubernetes.io/component", "processor"),
        ),
    )
    dep = queue.processor_deployment(b, options=options, prefix="p")
    assert dep["metadata"]["name"] == "examples-processor"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "rel"  # what the chart's NetworkPolicies select
    assert labels["app.kubernetes.io/component"] == "processor"
    assert dep["spec"]["selector"]["matchLabels"] == queue.processor_selector(b)
    assert labels["app.kubernetes.io/name"] == "streamer-queue-processor"  # never the chart's processors
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STREAMER_REQUESTS_TABLE"] == "p-requests.team.examples"
    assert dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "aws", "optional": True}}
    ]
    assert queue.processor_pdb(b) is not None
    assert queue.processor_pdb(body(queue={"mode": "dedicated"})) is None
    definition = queue.table_definition(
        body(
            queue={
                "mode": "dedicated",
                "deletionProtection": True,
                "encryption": {"type": "KMS", "kmsKeyId": "k"},
            }
        ),
        prefix="p",
    )
    assert definition["DeletionProtectionEnabled"] is True
    assert definition["SSESpecification"] == {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": "k"}
    assert definition["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
