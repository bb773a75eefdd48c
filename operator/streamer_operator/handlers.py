"""kopf wiring: which events trigger a reconcile, the finalizer, and kopf's settings.

Everything is registered on a registry passed in (never kopf's global one), so the
operator's entry point and each test build their own operator from the same code.

Triggers:
- create / update (of ``spec``) / resume of a StreamerHandler → reconcile it, then the
  other handlers whose action claims it may have changed (conflicts are between CRs);
- events on the children (Deployment, Service, HPA, PDB labelled as ours) → reconcile
  the owner: a deleted or edited child is put back, a Deployment's status change
  updates ``readyReplicas`` and ``DeploymentAvailable`` at once;
- a daemon per CR that re-reconciles as a safety net (``STREAMER_OPERATOR_RESYNC_SECONDS``);
- delete → remove the children, let rivals take the freed actions, then kopf
  releases the finalizer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from streamer_operator import children, status
from streamer_operator.kube import ApiError
from streamer_operator.options import OperatorOptions
from streamer_operator.reconciler import Key, Reconciler

log = logging.getLogger(__name__)

FINALIZER = "streamer.dev/finalizer"
ANNOTATION_PREFIX = "streamer.dev"
INDEX = "streamer_handlers"
RETRY_DELAY = 5.0


def _docs(index: Any) -> list[Mapping[str, Any]]:
    """Every StreamerHandler body kopf's index holds."""
    docs: list[Mapping[str, Any]] = []
    for store in index.values():
        docs.extend(store)
    return docs


def _post(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(body, type=kind, reason=reason, message=message[:1000])  # type: ignore[arg-type]


def rivals(body: Mapping[str, Any], docs: Iterable[Mapping[str, Any]]) -> list[Key]:
    """Other handlers whose Ready may change with ``body``: they share an action with
    it, or are currently blocked by an action conflict."""
    me = (children.namespace_of(body), children.name_of(body))
    mine = set(status.action_names(body))
    out: list[Key] = []
    for doc in docs:
        key = (children.namespace_of(doc), children.name_of(doc))
        if key == me or (doc.get("metadata") or {}).get("deletionTimestamp"):
            continue
        ready = status.get_condition(doc.get("status"), status.READY) or {}
        if ready.get("reason") == status.ACTION_CONFLICT or mine & set(status.action_names(doc)):
            out.append(key)
    return out


def register(registry: kopf.OperatorRegistry, *, reconciler: Reconciler, options: OperatorOptions) -> None:
    """Register the operator's handlers on ``registry``."""
    group, version, plural = children.GROUP, children.VERSION, children.PLURAL

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Our own finalizer and annotation names, and nothing in status but our fields:
        # the CRD's structural schema would prune kopf's status.kopf anyway.
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
        )
        # Only warnings of kopf's own log become Kubernetes Events; ours are posted explicitly.
        settings.posting.level = logging.WARNING
        # Ask the API server for our children only (a cluster's Deployments are many).
        selector = f"{children.MANAGED_BY_LABEL}={children.MANAGER}"
        for ref in children.CHILD_REFS:
            settings.watching.label_selectors[ref.group, ref.version, ref.plural] = selector
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330

    # kopf passes many keyword arguments; handlers take them as **kw and pick what they need,
    # which keeps them compatible with kopf's handler protocols.

    @kopf.index(group, version, plural, registry=registry, id=INDEX)
    def streamer_handlers(**kw: Any) -> dict[Key, dict[str, Any]]:
        return {(str(kw["namespace"]), str(kw["name"])): copy.deepcopy(dict(kw["body"]))}

    async def reconcile_rivals(body: Mapping[str, Any], docs: list[Mapping[str, Any]], trigger: str) -> None:
        for key in rivals(body, docs):
            try:
                await reconciler.reconcile(key, others=docs, trigger=trigger, post=_post)
            except Exception:  # the rival's own timer retries; this one must not fail for it
                log.warning(
                    "could not reconcile a rival handler", exc_info=True, extra={"handler": "/".join(key)}
                )

    async def on_change(kw: Mapping[str, Any], trigger: str) -> None:
        docs = _docs(kw[INDEX])
        body = copy.deepcopy(dict(kw["body"]))
        key = (children.namespace_of(body), children.name_of(body))
        try:
            result = await reconciler.reconcile(key, others=docs, trigger=trigger, post=_post)
        except ApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
        if result is not None:
            await reconcile_rivals(body, docs, "rival")

    @kopf.on.create(group, version, plural, registry=registry, id="reconcile-create")
    async def created(**kw: Any) -> None:
        await on_change(kw, "create")

    @kopf.on.update(group, version, plural, registry=registry, id="reconcile-update", field="spec")
    async def updated(**kw: Any) -> None:
        await on_change(kw, "update")

    @kopf.on.resume(group, version, plural, registry=registry, id="reconcile-resume")
    async def resumed(**kw: Any) -> None:
        await on_change(kw, "resume")

    @kopf.daemon(
        group,
        version,
        plural,
        registry=registry,
        id="resync",
        initial_delay=options.resync_seconds,
        # A reconcile is idempotent: on shutdown or deletion, cancel it rather than wait.
        cancellation_timeout=1.0,
    )
    async def resync(**kw: Any) -> None:
        key = (str(kw["namespace"]), str(kw["name"]))
        stopped = kw["stopped"]
        while not stopped:
            try:
                await reconciler.reconcile(key, others=_docs(kw[INDEX]), trigger="resync", post=_post)
            except Exception:  # the next round retries
                log.warning("resync failed", exc_info=True, extra={"handler": "/".join(key)})
            interval = options.resync_seconds
            if children.scaling_mode(kw["body"]) == "backlog":
                interval = min(interval, options.autoscale_seconds)
            await stopped.wait(interval)

    @kopf.on.delete(group, version, plural, registry=registry, id="cleanup")
    async def deleted(**kw: Any) -> None:
        plain = copy.deepcopy(dict(kw["body"]))
        try:
            removed = await reconciler.cleanup(plain)
        except ApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
        if removed:
            log.info(
                "deleted children", extra={"handler": children.name_of(plain), "kinds": ",".join(removed)}
            )
        await reconcile_rivals(plain, _docs(kw[INDEX]), "rival")

    def watch_child(ref: children.Ref) -> None:
        @kopf.on.event(
            ref.group,
            ref.version,
            ref.plural,
            registry=registry,
            id=f"child-{ref.plural}",
            labels={children.MANAGED_BY_LABEL: children.MANAGER},
        )
        async def child_event(**kw: Any) -> None:
            if kw["event"].get("type") is None:
                return  # the initial listing: resume handlers already cover it
            key = children.owner_key(kw["body"])
            index = kw[INDEX]
            if key is None or key not in index:
                return
            try:
                await reconciler.reconcile(key, others=_docs(index), trigger="child", post=_post)
            except Exception:  # the resync timer retries
                log.warning(
                    "reconcile after a child event failed", exc_info=True, extra={"handler": "/".join(key)}
                )

    for ref in children.CHILD_REFS:
        watch_child(ref)
