"""Which Secrets and ServiceAccounts a StreamerHandler may use (no confused deputy).

Whoever may create a StreamerHandler gets the operator to build pods for them. Without
a check, that person could mount any Secret of the namespace (the JWT key, the AWS
keys) or run as any ServiceAccount (the processor's cloud role) through the operator.
So every Secret and ServiceAccount a handler's pods would use is checked against the
operator's allow-lists (``STREAMER_OPERATOR_ALLOWED_SECRETS`` /
``STREAMER_OPERATOR_ALLOWED_SERVICE_ACCOUNTS``, globs matched against ``name`` and
``namespace/name``) and deny-lists (the release's own Secrets and ServiceAccounts;
a deny always wins). A refused handler is ``Ready=False`` with reason
``ForbiddenReference`` and no child is written for it.

Pure functions, tested without an API server.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any


def _containers(pod_spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for key in ("containers", "initContainers", "ephemeralContainers"):
        out.extend(c for c in pod_spec.get(key) or [] if isinstance(c, Mapping))
    return out


def _env_secrets(items: Iterable[Any]) -> list[str]:
    names = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        ref = (
            (item.get("valueFrom") or {}).get("secretKeyRef")
            if isinstance(item.get("valueFrom"), Mapping)
            else None
        )
        if isinstance(ref, Mapping) and ref.get("name"):
            names.append(str(ref["name"]))
    return names


def secret_refs(spec: Mapping[str, Any]) -> list[str]:
    """Every Secret name the handler's pods would read, in order, without repeats."""
    names: list[str] = _env_secrets(spec.get("env") or [])
    pod = (
        ((spec.get("template") or {}).get("spec") or {}) if isinstance(spec.get("template"), Mapping) else {}
    )
    for ref in pod.get("imagePullSecrets") or []:
        if isinstance(ref, Mapping) and ref.get("name"):
            names.append(str(ref["name"]))
    for container in _containers(pod):
        names.extend(_env_secrets(container.get("env") or []))
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef") if isinstance(source, Mapping) else None
            if isinstance(ref, Mapping) and ref.get("name"):
                names.append(str(ref["name"]))
    for volume in pod.get("volumes") or []:
        if not isinstance(volume, Mapping):
            continue
        secret = volume.get("secret")
        if isinstance(secret, Mapping) and secret.get("secretName"):
            names.append(str(secret["secretName"]))
        projected = volume.get("projected")
        for source in (projected.get("sources") if isinstance(projected, Mapping) else None) or []:
            ref = source.get("secret") if isinstance(source, Mapping) else None
            if isinstance(ref, Mapping) and ref.get("name"):
                names.append(str(ref["name"]))
        for key in ("csi", "cephfs", "rbd", "iscsi", "flexVolume", "azureFile", "scaleIO", "storageos"):
            inner = volume.get(key)
            if isinstance(inner, Mapping):
                ref = inner.get("nodePublishSecretRef") or inner.get("secretRef")
                if isinstance(ref, Mapping) and ref.get("name"):
                    names.append(str(ref["name"]))
                if inner.get("secretName"):
                    names.append(str(inner["secretName"]))
    return list(dict.fromkeys(names))


def service_account_refs(spec: Mapping[str, Any]) -> list[str]:
    """The ServiceAccount the handler's pods would run as, if one is named."""
    names = []
    if spec.get("serviceAccountName"):
        names.append(str(spec["serviceAccountName"]))
    template = spec.get("template")
    pod = (template.get("spec") or {}) if isinstance(template, Mapping) else {}
    for key in ("serviceAccountName", "serviceAccount"):
        if isinstance(pod, Mapping) and pod.get(key):
            names.append(str(pod[key]))
    return list(dict.fromkeys(names))


def matches(name: str, namespace: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` (or ``namespace/name``) matches one of the glob ``patterns``."""
    full = f"{namespace}/{name}"
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(full, p) for p in patterns)


def refused(
    kind: str,
    names: Iterable[str],
    namespace: str,
    *,
    allowed: Iterable[str],
    denied: Iterable[str],
    setting: str,
) -> list[str]:
    allowed, denied = list(allowed), list(denied)
    out = []
    for name in names:
        if matches(name, namespace, denied):
            out.append(f"{kind} {name!r} is reserved for Streamer itself")
        elif not matches(name, namespace, allowed):
            out.append(f"{kind} {name!r} is not in the operator's allow-list ({setting})")
    return out


def violations(
    body: Mapping[str, Any],
    *,
    allowed_secrets: Iterable[str],
    denied_secrets: Iterable[str] = (),
    allowed_service_accounts: Iterable[str],
    denied_service_accounts: Iterable[str] = (),
) -> str | None:
    """Why the handler may not use what it references, or None when everything is allowed."""
    spec = body.get("spec") or {}
    if not isinstance(spec, Mapping):
        return None
    namespace = str((body.get("metadata") or {}).get("namespace") or "default")
    problems = refused(
        "Secret",
        secret_refs(spec),
        namespace,
        allowed=allowed_secrets,
        denied=denied_secrets,
        setting="STREAMER_OPERATOR_ALLOWED_SECRETS",
    ) + refused(
        "ServiceAccount",
        service_account_refs(spec),
        namespace,
        allowed=allowed_service_accounts,
        denied=denied_service_accounts,
        setting="STREAMER_OPERATOR_ALLOWED_SERVICE_ACCOUNTS",
    )
    return "; ".join(problems) if problems else None
