"""Pure rules for a ``StreamerHandler``'s status: conditions, conflicts, what changed.

Two summary conditions:

- ``Serving``: router and processor may route to the handler (a valid spec, no
  conflict, pods that answer, its tables). This is what the registry reads, so a
  rollout (old pods still serving) never takes a handler's actions away.
- ``Ready``: ``Serving`` and the current generation is rolled out (the Deployment
  controller observed it, every pod is updated and available) — what ``kubectl wait
  --for=condition=Ready`` and a CD pipeline want to know after a change.

Conditions follow the Knative/Kubernetes convention: ``Ready`` sums up the others,
``lastTransitionTime`` moves only when ``status`` flips (a new reason or message keeps
the old time), so ``kubectl wait --for=condition=Ready`` and alerting on "not ready
for 10 minutes" mean what they say.

Conflicts use one rule shared with :func:`streamer.registry.model.build_index`: the
oldest claimant of an action (creation time, then namespace/name) keeps it, every
later one is ``Ready=False`` with reason ``ActionConflict``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from streamer.registry.model import RegistryError, parse_handler
from streamer_operator import children

READY = "Ready"
SERVING = "Serving"
DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
ROLLED_OUT = "RolledOut"
TABLES_READY = "TablesReady"
CONSUMER_READY = "ConsumerReady"

ACTION_CONFLICT = "ActionConflict"
INVALID_SPEC = "InvalidSpec"
CHILD_CONFLICT = "ChildConflict"
FORBIDDEN_REFERENCE = "ForbiddenReference"
SCALED_TO_ZERO = "ScaledToZero"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    """One condition as observed now; ``status`` None means Unknown."""

    status: bool | None
    reason: str
    message: str = ""


def now_iso(clock: datetime.datetime | None = None) -> str:
    """RFC 3339 in UTC, seconds precision, as Kubernetes writes times."""
    moment = clock or datetime.datetime.now(tz=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_word(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def condition(
    kind: str,
    observed: Observation,
    *,
    previous: Iterable[Mapping[str, Any]] = (),
    now: str,
    generation: int | None = None,
) -> dict[str, Any]:
    """One condition dict; keeps the previous ``lastTransitionTime`` unless the status flipped."""
    word = _status_word(observed.status)
    since = now
    for old in previous:
        if old.get("type") == kind and old.get("status") == word and old.get("lastTransitionTime"):
            since = str(old["lastTransitionTime"])
            break
    out: dict[str, Any] = {
        "type": kind,
        "status": word,
        "reason": observed.reason,
        "message": observed.message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def _sort_key(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (
        str(meta.get("creationTimestamp") or ""),
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
    )


def claim_order(docs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Documents in the order that decides who keeps a contested action (oldest first)."""
    return sorted(docs, key=_sort_key)


def _identity(doc: Mapping[str, Any]) -> tuple[str, str]:
    meta = doc.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def action_names(doc: Mapping[str, Any]) -> list[str]:
    """The action names of a document, or [] when it is not a valid handler."""
    try:
        return [spec.name for spec in parse_handler(doc)]
    except RegistryError:
        return []


def action_conflicts(body: Mapping[str, Any], *, others: Iterable[Mapping[str, Any]]) -> list[str]:
    """Messages for each action of ``body`` that an older, live handler already claims.

    Handlers being deleted and invalid ones claim nothing: they can serve nothing.
    """
    me = _identity(body)
    mine = set(action_names(body))
    if not mine:
        return []
    mine_key = _sort_key(body)
    messages = []
    rivals = claim_order(
        doc
        for doc in others
        if _identity(doc) != me and not (doc.get("metadata") or {}).get("deletionTimestamp")
    )
    taken: set[str] = set()
    for rival in rivals:
        if _sort_key(rival) >= mine_key:
            break
        ns, name = _identity(rival)
        for action in action_names(rival):
            if action in mine and action not in taken:
                taken.add(action)
                messages.append(f"action {action!r} is already served by StreamerHandler {ns}/{name}")
    return messages


def deployment_observation(body: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> Observation:
    """DeploymentAvailable: at least one handler pod is ready to take calls."""
    if deployment is None:
        return Observation(
            status=False, reason="DeploymentNotFound", message="the Deployment does not exist yet"
        )
    st = deployment.get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    if ready > 0:
        return Observation(status=True, reason="MinimumReplicasAvailable", message=f"{ready} pod(s) ready")
    wanted = (deployment.get("spec") or {}).get("replicas")
    if wanted == 0:
        return Observation(status=False, reason="ScaledToZero", message="spec.replicas is 0")
    return Observation(status=False, reason="NoReadyReplicas", message="no handler pod is ready yet")


def rollout_observation(deployment: Mapping[str, Any] | None) -> Observation:
    """RolledOut: the Deployment's current generation runs everywhere (as ``kubectl rollout
    status`` decides): observed by its controller, every pod updated, no old pod left,
    every updated pod available."""
    if deployment is None:
        return Observation(
            status=False, reason="DeploymentNotFound", message="the Deployment does not exist yet"
        )
    meta = deployment.get("metadata") or {}
    st = deployment.get("status") or {}
    generation = meta.get("generation")
    observed = st.get("observedGeneration")
    if generation is not None and (observed is None or int(observed) < int(generation)):
        return Observation(
            status=False,
            reason="RolloutPending",
            message=f"the Deployment controller has not observed generation {generation} yet",
        )
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Observation(
                status=False, reason="ProgressDeadlineExceeded", message=str(cond.get("message") or "")
            )
    raw = (deployment.get("spec") or {}).get("replicas")
    wanted = children.DEFAULT_REPLICAS if raw is None else int(raw)
    updated = int(st.get("updatedReplicas") or 0)
    replicas = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    if updated < wanted:
        return Observation(
            status=False, reason="RolloutInProgress", message=f"{updated} of {wanted} pod(s) updated"
        )
    if replicas > updated:
        return Observation(
            status=False,
            reason="RolloutInProgress",
            message=f"{replicas - updated} old pod(s) still running",
        )
    if available < updated:
        return Observation(
            status=False,
            reason="RolloutInProgress",
            message=f"{available} of {updated} updated pod(s) available",
        )
    return Observation(status=True, reason="RolledOut", message=f"{updated} pod(s) updated and available")


def serving_observation(
    *,
    invalid: str | None,
    conflicts: list[str],
    deployment: Observation,
    tables: Observation,
    consumer: Observation | None = None,
    child_conflict: str | None = None,
    denied: str | None = None,
) -> Observation:
    """Serving: a valid, allowed spec, no conflicting action or object, pods ready,
    tables there (and, for a dedicated queue, its consumer)."""
    if invalid:
        return Observation(status=False, reason=INVALID_SPEC, message=invalid)
    if denied:
        return Observation(status=False, reason=FORBIDDEN_REFERENCE, message=denied)
    if child_conflict:
        return Observation(status=False, reason=CHILD_CONFLICT, message=child_conflict)
    if conflicts:
        return Observation(status=False, reason=ACTION_CONFLICT, message="; ".join(conflicts))
    if deployment.status is not True and deployment.reason != SCALED_TO_ZERO:
        return Observation(status=False, reason="DeploymentNotAvailable", message=deployment.message)
    if tables.status is not True:
        return Observation(status=tables.status, reason="TablesNotReady", message=tables.message)
    if consumer is not None and consumer.status is not True:
        return Observation(status=consumer.status, reason="ConsumerNotReady", message=consumer.message)
    if deployment.reason == SCALED_TO_ZERO:
        return Observation(
            status=True, reason=SCALED_TO_ZERO, message="requests are queued; the first one wakes the handler"
        )
    return Observation(
        status=True, reason="HandlerServing", message="router and processor route to this handler"
    )


def ready_observation(serving: Observation, rollout: Observation) -> Observation:
    """Ready: Serving, and the current generation is rolled out."""
    if serving.status is not True:
        return serving
    if rollout.status is not True:
        return Observation(status=False, reason=rollout.reason, message=rollout.message)
    return Observation(
        status=True, reason="HandlerReady", message="router and processor route to this handler"
    )


def compute_status(
    body: Mapping[str, Any],
    *,
    deployment: Mapping[str, Any] | None,
    tables: Observation,
    conflicts: list[str],
    invalid: str | None = None,
    child_conflict: str | None = None,
    denied: str | None = None,
    consumer: Observation | None = None,
    extra: Mapping[str, Any] | None = None,
    scaled_to_zero: bool = False,
    now: str,
) -> dict[str, Any]:
    """The whole ``status`` the operator writes for ``body``.

    ``consumer`` is the dedicated queue's ConsumerReady (None for a shared queue);
    ``extra`` adds fields (queue table, autoscaler state); ``scaled_to_zero`` says
    the autoscaler put the handler to sleep on purpose (still Serving: requests queue).
    """
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    generation = int(generation) if generation is not None else None
    previous = list((body.get("status") or {}).get("conditions") or [])
    deploy_obs = deployment_observation(body, deployment)
    if scaled_to_zero and deploy_obs.status is not True:
        deploy_obs = Observation(
            status=False, reason=SCALED_TO_ZERO, message="no backlog: scaled to zero by the operator"
        )
    rollout_obs = rollout_observation(deployment)
    serving_obs = serving_observation(
        invalid=invalid,
        conflicts=conflicts,
        deployment=deploy_obs,
        tables=tables,
        consumer=consumer,
        child_conflict=child_conflict,
        denied=denied,
    )
    ready_obs = ready_observation(serving_obs, rollout_obs)
    dstatus = (deployment or {}).get("status") or {}

    def cond(kind: str, obs: Observation) -> dict[str, Any]:
        return condition(kind, obs, previous=previous, now=now, generation=generation)

    conditions = [
        cond(READY, ready_obs),
        cond(SERVING, serving_obs),
        cond(DEPLOYMENT_AVAILABLE, deploy_obs),
        cond(ROLLED_OUT, rollout_obs),
        cond(TABLES_READY, tables),
    ]
    if consumer is not None:
        conditions.append(cond(CONSUMER_READY, consumer))
    out: dict[str, Any] = {
        "endpoint": children.endpoint(body),
        "actions": action_names(body),
        "replicas": int(dstatus.get("replicas") or 0),
        "readyReplicas": int(dstatus.get("readyReplicas") or 0),
        "conditions": conditions,
    }
    if extra:
        out.update(extra)
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def get_condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def is_ready(doc: Mapping[str, Any]) -> bool:
    """Whether a document's status says Ready=True."""
    cond = get_condition(doc.get("status"), READY)
    return bool(cond and cond.get("status") == "True")


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` would change anything the operator owns in ``old``."""
    old = old or {}
    return any(old.get(key) != value for key, value in new.items())
