"""Pure builders of the objects a ``StreamerHandler`` owns: Deployment, Service, HPA, PDB.

Every function takes the CR as a plain mapping and returns plain dicts, so the whole
shape of what the operator creates is tested without an API server. The builders
apply the CRD's defaults themselves: an API server that skipped defaulting (an old
object, an emulator) must still get a correct Deployment.

Why the Service is headless: gRPC keeps one HTTP/2 connection per target, so a
ClusterIP Service would pin every router or processor pod to a single handler pod.
With ``clusterIP: None`` the name resolves to the ready pods' addresses and a gRPC
client (``dns:///`` with ``round_robin``) spreads calls across all of them; with the
default ``pick_first`` it still works, just without spreading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from streamer.registry.model import DEFAULT_TIMEOUT_SECONDS, RegistryError, parse_duration

GROUP = "streamer.dev"
VERSION = "v1alpha1"
PLURAL = "streamerhandlers"
KIND = "StreamerHandler"
API_VERSION = f"{GROUP}/{VERSION}"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
#: Hash of the object the operator last applied, so a spec change (a removed field
#: included) is applied and an unchanged one costs no write.
APPLIED_HASH_ANNOTATION = "streamer.dev/applied-hash"
MANAGER = "streamer-operator"
HANDLER_LABEL = "streamer.dev/handler"

DEFAULT_PORT = 50061
DEFAULT_METRICS_PORT = 9090
DEFAULT_REPLICAS = 1
DEFAULT_MIN_REPLICAS = 1
DEFAULT_TARGET_CPU = 80
#: Seconds the handler keeps serving running Invokes after SIGTERM, beyond the longest
#: action timeout (the SDK's ``STREAMER_DRAIN_SECONDS``), and what the kubelet waits
#: on top of that before it kills the pod.
DRAIN_MARGIN_SECONDS = 5
GRACE_MARGIN_SECONDS = 10
MIN_GRACE_SECONDS = 30
RUN_AS_USER = 10001
CONTAINER_NAME = "handler"
# Requests the HPA needs (CPU utilization is a percentage of the request) and a memory
# limit so one leaking handler cannot take the node; used only when spec.resources is empty.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
}


@dataclasses.dataclass(frozen=True)
class Ref:
    """Where a kind of object lives in the API."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """The REST path of the collection in ``namespace``, or of one object (and subresource)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name:
            path += f"/{name}"
            if subresource:
                path += f"/{subresource}"
        return path


DEPLOYMENTS = Ref("apps", "v1", "deployments", "Deployment")
SERVICES = Ref("", "v1", "services", "Service")
HPAS = Ref("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
PDBS = Ref("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
HANDLERS = Ref(GROUP, VERSION, PLURAL, KIND)
CHILD_REFS: tuple[Ref, ...] = (DEPLOYMENTS, SERVICES, HPAS, PDBS)


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("spec") or {}


def name_of(body: Mapping[str, Any]) -> str:
    return str(_meta(body).get("name") or "")


def namespace_of(body: Mapping[str, Any]) -> str:
    return str(_meta(body).get("namespace") or "default")


def port_of(body: Mapping[str, Any]) -> int:
    return int(_spec(body).get("port") or DEFAULT_PORT)


def metrics_port_of(body: Mapping[str, Any]) -> int:
    return int(_spec(body).get("metricsPort") or DEFAULT_METRICS_PORT)


def endpoint(body: Mapping[str, Any]) -> str:
    """The address router and processor call: ``<name>.<namespace>.svc:<port>``."""
    return f"{name_of(body)}.{namespace_of(body)}.svc:{port_of(body)}"


def selector_labels(body: Mapping[str, Any]) -> dict[str, str]:
    """The pod selector; never changes for a given CR (a Deployment's selector is immutable)."""
    return {"app.kubernetes.io/name": "streamer-handler", HANDLER_LABEL: name_of(body)}


def labels(body: Mapping[str, Any]) -> dict[str, str]:
    """Labels on every child and on the pods; the operator watches children by MANAGED_BY_LABEL."""
    return {
        **selector_labels(body),
        "app.kubernetes.io/instance": name_of(body),
        "app.kubernetes.io/component": "handler",
        "app.kubernetes.io/part-of": "streamer",
        MANAGED_BY_LABEL: MANAGER,
    }


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """The controller reference kopf.adopt would add: GC deletes the child with its CR."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name_of(body),
        "uid": str(_meta(body).get("uid") or ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _object_meta(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name_of(body),
        "namespace": namespace_of(body),
        "labels": labels(body),
        "ownerReferences": [owner_reference(body)],
    }


def _quantities(values: Mapping[str, Any] | None) -> dict[str, str]:
    # The API server returns quantities as strings; strings here keep drift checks exact.
    return {str(k): str(v) for k, v in (values or {}).items()}


def resources(body: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    raw = _spec(body).get("resources") or {}
    out = {key: _quantities(raw.get(key)) for key in ("requests", "limits") if raw.get(key)}
    return out or {key: dict(value) for key, value in DEFAULT_RESOURCES.items()}


def env(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The operator's variables first, then the CR's; a CR variable of the same name wins."""
    spec = _spec(body)
    base: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "STREAMER_HANDLER_NAME", "value": name_of(body)},
        {"name": "STREAMER_GRPC_PORT", "value": str(port_of(body))},
        {"name": "STREAMER_HTTP_PORT", "value": str(metrics_port_of(body))},
        {"name": "STREAMER_DRAIN_SECONDS", "value": str(drain_seconds(body))},
    ]
    if spec.get("concurrency"):
        base.append({"name": "STREAMER_HANDLER_CONCURRENCY", "value": str(spec["concurrency"])})
    merged: dict[str, dict[str, Any]] = {item["name"]: item for item in base}
    for item in spec.get("env") or []:
        entry = {"name": str(item["name"])}
        if "valueFrom" in item and item["valueFrom"] is not None:
            entry["valueFrom"] = item["valueFrom"]
        else:
            entry["value"] = str(item.get("value", ""))
        merged[entry["name"]] = entry
    return list(merged.values())


def longest_timeout(body: Mapping[str, Any]) -> float:
    """The longest ``timeout`` among the CR's actions (their default when unset)."""
    longest = 0.0
    for action in _spec(body).get("actions") or []:
        raw = action.get("timeout", DEFAULT_TIMEOUT_SECONDS) if isinstance(action, Mapping) else None
        try:
            longest = max(longest, parse_duration(raw, where="timeout"))
        except RegistryError:
            longest = max(longest, DEFAULT_TIMEOUT_SECONDS)
    return longest or DEFAULT_TIMEOUT_SECONDS


def drain_seconds(body: Mapping[str, Any]) -> int:
    """How long a handler pod keeps finishing running Invokes after SIGTERM.

    The SDK stops taking new calls at once and gives running ones this long: the
    longest action timeout plus a margin, so a rollout never cuts an attempt short.
    """
    return math.ceil(longest_timeout(body)) + DRAIN_MARGIN_SECONDS


def termination_grace(body: Mapping[str, Any]) -> int:
    """The pod's ``terminationGracePeriodSeconds``: the drain plus time to shut down."""
    return max(MIN_GRACE_SECONDS, drain_seconds(body) + GRACE_MARGIN_SECONDS)


def _probe(port: int, *, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {
        "grpc": {"port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def uses_autoscaling(body: Mapping[str, Any]) -> bool:
    return bool(_spec(body).get("autoscaling"))


def scaling_mode(body: Mapping[str, Any]) -> str:
    """none, cpu (an HPA), backlog (the operator) or external (HPA/KEDA through /scale)."""
    scaling = _spec(body).get("autoscaling")
    if not scaling:
        return "none"
    if scaling.get("external"):
        return "external"
    return "backlog" if scaling.get("metric") == "backlog" else "cpu"


def spec_replicas(body: Mapping[str, Any]) -> int:
    replicas = _spec(body).get("replicas")
    return DEFAULT_REPLICAS if replicas is None else int(replicas)


def least_replicas(body: Mapping[str, Any]) -> int:
    """Pods the handler runs at the least: what decides whether a PDB makes sense."""
    spec = _spec(body)
    if scaling_mode(body) in ("cpu", "backlog"):
        low = spec["autoscaling"].get("minReplicas")
        return DEFAULT_MIN_REPLICAS if low is None else int(low)
    return spec_replicas(body)


def selector_string(body: Mapping[str, Any]) -> str:
    """The pod selector as a string: ``status.selector``, which the scale subresource reports."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(body).items())


def deployment(body: Mapping[str, Any], *, replicas: int | None = None) -> dict[str, Any]:
    """The handler's Deployment: non-root, read-only root, no capabilities, gRPC probes.

    ``replicas`` is the backlog autoscaler's count (ignored in the other modes).
    """
    spec = _spec(body)
    port, metrics_port = port_of(body), metrics_port_of(body)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": str(spec.get("image") or ""),
        "ports": [
            {"name": "grpc", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"},
        ],
        "env": env(body),
        "resources": resources(body),
        # Startup allows a slow first start (imports, connections) without a lax liveness probe.
        "startupProbe": _probe(port, period=2, failures=60),
        "readinessProbe": _probe(port, period=5, failures=2),
        "livenessProbe": _probe(port, period=10, failures=3),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # A read-only root filesystem still needs somewhere for tempfile and caches.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if spec.get("imagePullPolicy"):
        container["imagePullPolicy"] = spec["imagePullPolicy"]
    if spec.get("command"):
        container["command"] = [str(x) for x in spec["command"]]
    if spec.get("args"):
        container["args"] = [str(x) for x in spec["args"]]
    pod_spec: dict[str, Any] = {
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace(body),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(body)},
            }
        ],
    }
    if spec.get("serviceAccountName"):
        pod_spec["serviceAccountName"] = spec["serviceAccountName"]
    else:
        # A handler talks gRPC, not to the Kubernetes API: no token unless its own SA asks for one.
        pod_spec["automountServiceAccountToken"] = False
    pod_template = merge_template(
        {
            "metadata": {
                "labels": labels(body),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(metrics_port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
        spec.get("template"),
        protected_labels=selector_labels(body),
    )
    deploy_spec: dict[str, Any] = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector_labels(body)},
        # Never below the wanted count during a rollout: a handler may hold long requests.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": pod_template,
    }
    mode = scaling_mode(body)
    if mode == "backlog":
        deploy_spec["replicas"] = least_replicas(body) if replicas is None else int(replicas)
    elif mode != "cpu":
        # spec.replicas: the user's, or (external) what HPA/KEDA wrote through /scale.
        # With a CPU HPA the count is the HPA's: leaving it out keeps us from fighting it.
        deploy_spec["replicas"] = spec_replicas(body)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _object_meta(body),
        "spec": deploy_spec,
    }


#: Pod fields the operator builds itself and merges with ``spec.template`` item by item;
#: every other field of ``spec.template.spec`` replaces the operator's value.
_MERGED_LISTS = ("containers", "volumes")


def _merge_by_name(ours: list[dict[str, Any]], theirs: Any) -> list[dict[str, Any]]:
    """Items of ``theirs`` merged into ours of the same name, the others appended."""
    out = [dict(item) for item in ours]
    index = {item.get("name"): i for i, item in enumerate(out)}
    for item in theirs or []:
        if not isinstance(item, Mapping):
            continue
        i = index.get(item.get("name"))
        if i is None:
            out.append(json.loads(json.dumps(item)))
            continue
        merged = dict(out[i])
        for key, value in item.items():
            if key in ("env", "volumeMounts", "ports") and isinstance(value, list):
                merged[key] = _merge_by_name(list(merged.get(key) or []), value)
            else:
                merged[key] = json.loads(json.dumps(value))
        out[i] = merged
    return out


def merge_template(
    pod_template: dict[str, Any], template: Any, *, protected_labels: Mapping[str, str]
) -> dict[str, Any]:
    """The operator's pod template with the CR's ``spec.template`` merged in.

    ``metadata.labels`` and ``annotations`` are added (the selector labels cannot be
    changed); ``containers`` and ``volumes`` merge by name (a container named
    ``handler`` adjusts the handler container, e.g. extra ``volumeMounts``; any other
    is a sidecar); every other pod field (imagePullSecrets, nodeSelector, tolerations,
    affinity, topologySpreadConstraints, priorityClassName, initContainers, ...)
    replaces the operator's value.
    """
    if not isinstance(template, Mapping):
        return pod_template
    out = json.loads(json.dumps(pod_template))
    meta = template.get("metadata") or {}
    if isinstance(meta, Mapping):
        for key in ("labels", "annotations"):
            extra = meta.get(key)
            if isinstance(extra, Mapping):
                merged = {**out["metadata"].get(key, {}), **{str(k): str(v) for k, v in extra.items()}}
                if key == "labels":
                    merged.update(protected_labels)
                out["metadata"][key] = merged
    pod = template.get("spec") or {}
    if isinstance(pod, Mapping):
        for key, value in pod.items():
            if key in _MERGED_LISTS:
                out["spec"][key] = _merge_by_name(out["spec"].get(key) or [], value)
            else:
                out["spec"][key] = json.loads(json.dumps(value))
        if pod.get("serviceAccountName") or pod.get("serviceAccount"):
            out["spec"].pop("automountServiceAccountToken", None)
    return out  # type: ignore[no-any-return]


def service(body: Mapping[str, Any]) -> dict[str, Any]:
    """A headless Service: the endpoint's DNS name resolves to the ready handler pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _object_meta(body),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(body),
            "ports": [
                {
                    "name": "grpc",
                    "port": port_of(body),
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "metrics",
                    "port": metrics_port_of(body),
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def hpa(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """A CPU-based HorizontalPodAutoscaler when ``spec.autoscaling`` is set, else None."""
    scaling = _spec(body).get("autoscaling")
    if not scaling or scaling_mode(body) != "cpu":
        return None
    minimum = int(scaling.get("minReplicas") or DEFAULT_MIN_REPLICAS)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _object_meta(body),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name_of(body)},
            "minReplicas": minimum,
            "maxReplicas": max(minimum, int(scaling.get("maxReplicas") or minimum)),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": int(
                                scaling.get("targetCPUUtilizationPercentage") or DEFAULT_TARGET_CPU
                            ),
                        },
                    },
                }
            ],
        },
    }


def pdb(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """A PodDisruptionBudget (one pod down at a time) when more than one pod runs, else None."""
    if least_replicas(body) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _object_meta(body),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(body)}},
    }


def desired(body: Mapping[str, Any], *, replicas: int | None = None) -> dict[Ref, dict[str, Any] | None]:
    """Every child kind with its wanted object, or None where it must not exist."""
    return {
        DEPLOYMENTS: deployment(body, replicas=replicas),
        SERVICES: service(body),
        HPAS: hpa(body),
        PDBS: pdb(body),
    }


def is_subset(wanted: Any, live: Any) -> bool:
    """Whether ``live`` already holds everything in ``wanted`` (extra live fields are fine).

    The API server adds defaults and other controllers add fields, so equality would
    report drift forever; lists must match item by item because their order matters
    (containers, ports, env).
    """
    if isinstance(wanted, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(key in live and is_subset(value, live[key]) for key, value in wanted.items())
    if isinstance(wanted, list):
        if not isinstance(live, list) or len(wanted) != len(live):
            return False
        return all(is_subset(w, v) for w, v in zip(wanted, live, strict=True))
    return bool(wanted == live)


def applied_hash(obj: Mapping[str, Any]) -> str:
    """A stable hash of a wanted object (without the hash annotation itself)."""
    plain = json.loads(json.dumps(obj, sort_keys=True, default=str))
    meta = plain.get("metadata") or {}
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(APPLIED_HASH_ANNOTATION, None)
        if not annotations:
            del meta["annotations"]
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def with_applied_hash(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with its own hash in ``metadata.annotations`` (what the operator applies)."""
    out = json.loads(json.dumps(obj, default=str))
    meta = out.setdefault("metadata", {})
    meta.setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = applied_hash(obj)
    return out  # type: ignore[no-any-return]


def needs_apply(wanted: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether the wanted object must be applied over ``live``.

    Applied when it is missing, when what we want changed since the last apply (the
    hash differs: this is how a field removed from the spec reaches the object,
    because server-side apply removes the fields this manager stops sending), or
    when someone else changed a field we own (``wanted`` is no longer a subset).
    """
    if live is None:
        return True
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if annotations.get(APPLIED_HASH_ANNOTATION) != applied_hash(wanted):
        return True
    return not is_subset(with_applied_hash(wanted), live)


def owned_by(obj: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is controlled by this CR (by uid), so deleting it is ours to do."""
    uid = _meta(body).get("uid")
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("kind") == KIND and ref.get("uid") == uid and ref.get("controller") for ref in refs)


def owner_key(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the StreamerHandler controlling ``obj``, if any."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            return str(meta.get("namespace") or "default"), str(ref.get("name"))
    return None
