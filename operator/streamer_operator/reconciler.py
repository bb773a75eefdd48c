"""One level-triggered reconcile of a ``StreamerHandler``, whoever asks for it.

Creation, updates, the periodic resync and events on the owned children all call
:meth:`Reconciler.reconcile`, which reads the CR afresh, makes each child match what
the pure builders want (only when it differs, so an unchanged child costs no write
and causes no watch event), and writes the status only when it changed. One lock
per CR keeps two triggers from racing on the same children.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streamer import metrics
from streamer.registry.model import RegistryError, parse_handler
from streamer_operator import autoscale, children, policy, queue, scrape, status
from streamer_operator.kube import Kube
from streamer_operator.options import OperatorOptions
from streamer_operator.tables import TablesGate

log = logging.getLogger(__name__)

Key = tuple[str, str]
# (the CR, event type Normal/Warning, reason, message)
EventFn = Callable[[Mapping[str, Any], str, str, str], None]

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

RECONCILES = metrics.counter(
    "streamer_operator_reconciles_total",
    "Reconciles of StreamerHandlers by trigger and result.",
    ["trigger", "result"],
)
RECONCILE_DURATION = metrics.histogram(
    "streamer_operator_reconcile_duration_seconds", "Time of one reconcile of a StreamerHandler."
)
HANDLER_READY = metrics.gauge(
    "streamer_operator_handler_ready",
    "1 when a StreamerHandler's Ready condition is True, else 0; handler is namespace/name.",
    ["handler"],
)
CHILD_WRITES = metrics.counter(
    "streamer_operator_child_writes_total",
    "Children created, updated or deleted by the operator.",
    ["kind", "op"],
)


def spec_problem(body: Mapping[str, Any]) -> str | None:
    """Why a CR cannot be deployed, or None. The CRD catches most of this; an API server
    without validation (or an old CRD) must not make the operator build broken children."""
    name = children.name_of(body)
    if len(name) > 63 or not _DNS_1035.match(name):
        return f"metadata.name {name!r} must be a DNS-1035 label of at most 63 characters"
    spec = body.get("spec") or {}
    if not isinstance(spec.get("image"), str) or not spec["image"].strip():
        return "spec.image is required"
    scaling = spec.get("autoscaling")
    if scaling and not scaling.get("external"):
        low = scaling.get("minReplicas")
        low = children.DEFAULT_MIN_REPLICAS if low is None else low
        high = scaling.get("maxReplicas")
        if not isinstance(high, int) or not isinstance(low, int) or high < low:
            return "spec.autoscaling.maxReplicas must be an integer of at least minReplicas"
        if low == 0 and scaling.get("metric") != "backlog":
            return (
                "spec.autoscaling.minReplicas 0 needs metric backlog (a CPU autoscaler cannot wake a handler)"
            )
    try:
        parse_handler(body)
    except RegistryError as exc:
        return str(exc)
    return None


def claimable(live: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether an existing object of a child's name is ours to overwrite.

    Owned by this CR (same uid), or labelled as this handler's by the operator (a CR
    deleted with orphaning and created again gets its children back); anything else
    is somebody else's object and is left alone.
    """
    if children.owned_by(live, body):
        return True
    labels = (live.get("metadata") or {}).get("labels") or {}
    return bool(
        labels.get(children.MANAGED_BY_LABEL) == children.MANAGER
        and labels.get(children.HANDLER_LABEL) == children.name_of(body)
    )


class ChildConflict(Exception):
    """An object with a child's name exists and belongs to someone else."""


class Reconciler:
    """Reconciles StreamerHandlers through :class:`Kube`; shared by every kopf handler."""

    def __init__(
        self,
        *,
        kube: Kube,
        tables: TablesGate,
        options: OperatorOptions | None = None,
        queues: queue.QueueTables | None = None,
        autoscaler: autoscale.Autoscaler | None = None,
        clock: Callable[[], str] = status.now_iso,
    ) -> None:
        self.kube = kube
        self.tables = tables
        self.options = options or OperatorOptions()
        self.queues = queues or queue.QueueTables(settings=tables.settings, manage=tables.manage)
        self.autoscaler = autoscaler or autoscale.Autoscaler()
        self.metrics = scrape.ProcessorMetrics(
            kube,
            shared_namespace=self.options.processor_namespace,
            shared_labels=dict(self.options.processor_pod_labels),
            cache_seconds=min(5.0, self.options.autoscale_seconds / 2),
        )
        self.clock = clock
        self._locks: dict[Key, asyncio.Lock] = {}
        self._deleting: set[Key] = set()

    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def reconcile(
        self,
        key: Key,
        *,
        others: Iterable[Mapping[str, Any]],
        trigger: str,
        post: EventFn | None = None,
    ) -> dict[str, Any] | None:
        """Bring one CR's children and status up to date; None if the CR is gone or going."""
        if key in self._deleting:
            return None
        started = time.monotonic()
        try:
            async with self._lock(key):
                result = await self._reconcile(key, others=list(others), post=post)
        except Exception:
            RECONCILES.labels(trigger, "error").inc()
            raise
        finally:
            RECONCILE_DURATION.observe(time.monotonic() - started)
        RECONCILES.labels(trigger, "ok" if result is not None else "skipped").inc()
        if result is not None:
            ready = (status.get_condition(result, status.READY) or {}).get("status") == "True"
            HANDLER_READY.labels(f"{key[0]}/{key[1]}").set(1 if ready else 0)
        return result

    async def _reconcile(
        self, key: Key, *, others: list[Mapping[str, Any]], post: EventFn | None
    ) -> dict[str, Any] | None:
        namespace, name = key
        body = await self.kube.get_handler(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        problem = spec_problem(body)
        opts = self.options
        denied = policy.violations(
            body,
            allowed_secrets=opts.allowed_secrets,
            denied_secrets=opts.denied_secrets,
            allowed_service_accounts=opts.allowed_service_accounts,
            denied_service_accounts=opts.denied_service_accounts,
        )
        conflicts = status.action_conflicts(body, others=others)
        deployment: dict[str, Any] | None = None
        processors: dict[str, Any] | None = None
        child_conflict: str | None = None
        tables = await self.tables.observe()
        table_state: queue.TableState | None = None
        if queue.is_dedicated(body) and problem is None and denied is None and tables.status:
            # Checked (and put back) on every reconcile, the resync timer's included.
            table_state = await self.queues.observe(body)
            tables = table_state.observation
            if table_state.observation.status is False:
                self._post(
                    post, body, "Warning", table_state.observation.reason, table_state.observation.message
                )
        replicas: int | None = None
        if children.scaling_mode(body) == autoscale.BACKLOG and problem is None and denied is None:
            replicas = await self._autoscale(body, table_state)
        if problem is None and denied is None:
            try:
                deployment, processors = await self._sync_children(body, post=post, replicas=replicas)
            except ChildConflict as exc:
                child_conflict = str(exc)
        if deployment is None:
            deployment = await self.kube.get(children.DEPLOYMENTS, namespace, name)
            if deployment is not None and not claimable(deployment, body):
                deployment = None  # somebody else's: its pods are not ours to report
        consumer = queue.consumer_observation(processors) if queue.is_dedicated(body) else None
        if replicas == 0 and consumer is not None and consumer.status is not True:
            consumer = status.Observation(
                status=True, reason="ScaledToZero", message="no backlog: no processor runs"
            )
        extra: dict[str, Any] = {
            "queue": {"mode": queue.mode_of(body)},
            "selector": children.selector_string(body),
        }
        if replicas is not None:
            extra["desiredReplicas"] = replicas
        if table_state is not None and table_state.table:
            extra["queue"]["table"] = table_state.table
            if table_state.stream_arn:
                extra["queue"]["streamArn"] = table_state.stream_arn
        elif queue.is_dedicated(body):
            # Keep routing to the table the router already knows while it is checked again.
            known = ((body.get("status") or {}).get("queue") or {}).get("table")
            if known:
                extra["queue"]["table"] = known
        old = dict(body.get("status") or {})
        new = status.compute_status(
            body,
            deployment=deployment,
            tables=tables,
            conflicts=conflicts,
            invalid=problem,
            child_conflict=child_conflict,
            denied=denied,
            consumer=consumer,
            extra=extra,
            scaled_to_zero=replicas == 0,
            now=self.clock(),
        )
        if status.status_changed(old, new):
            patch = dict(new)
            old_queue: dict[str, Any] = old["queue"] if isinstance(old.get("queue"), dict) else {}
            # A merge patch keeps keys it does not mention: null the queue's stale ones.
            patch["queue"] = {**{k: None for k in old_queue if k not in new["queue"]}, **new["queue"]}
            await self.kube.patch_status(namespace, name, patch)
            self._announce(body, old, new, post)
        return new

    async def _autoscale(self, body: Mapping[str, Any], table_state: queue.TableState | None) -> int:
        """The backlog autoscaler's count for this handler (see :mod:`.autoscale`)."""
        key = (children.namespace_of(body), children.name_of(body))
        policy = autoscale.Policy.of(body)
        live = await self.kube.get(children.DEPLOYMENTS, *key)
        raw = ((live or {}).get("spec") or {}).get("replicas")
        current = policy.minimum if raw is None else int(raw)
        table = (table_state.table if table_state is not None else "") or self.tables.settings.table_name(
            "requests"
        )
        try:
            backlog = await self._measure(body, table)
        except Exception as exc:  # no reading: keep the count, try again next tick
            autoscale.READINGS.labels("failed").inc()
            log.warning("could not read a handler's backlog", extra={"handler": key[1], "error": repr(exc)})
            return current
        autoscale.READINGS.labels(backlog.source).inc()
        return self.autoscaler.step(key, current=current, backlog=backlog, policy=policy)

    async def _measure(self, body: Mapping[str, Any], table: str) -> autoscale.Backlog:
        """What the queue's processors export; the table's status index when none does."""
        dedicated = queue.is_dedicated(body)
        labels = queue.processor_selector(body) if dedicated else {}
        reading = await self.metrics.backlog(body, queue=table, dedicated=dedicated, labels=labels)
        if reading is not None:
            return reading
        from streamer.store.dynamo import open_client

        async with open_client("dynamodb", settings=self.tables.settings) as client:
            return await autoscale.measure(client, table, handler=children.name_of(body))

    def _wanted(
        self, body: Mapping[str, Any], replicas: int | None = None
    ) -> list[tuple[children.Ref, str, dict[str, Any] | None]]:
        """Every child (kind, name) with its wanted object, or None where it must not exist."""
        name = children.name_of(body)
        wanted: list[tuple[children.Ref, str, dict[str, Any] | None]] = [
            (ref, name, obj) for ref, obj in children.desired(body, replicas=replicas).items()
        ]
        dedicated = queue.is_dedicated(body)
        prefix = self.tables.settings.table_prefix
        proc = queue.processor_name(body)
        wanted.append(
            (
                children.DEPLOYMENTS,
                proc,
                queue.processor_deployment(
                    body, options=self.options, prefix=prefix, replicas=0 if replicas == 0 else None
                )
                if dedicated
                else None,
            )
        )
        wanted.append((children.PDBS, proc, queue.processor_pdb(body) if dedicated else None))
        return wanted

    async def _sync_children(
        self, body: Mapping[str, Any], *, post: EventFn | None, replicas: int | None = None
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Create, fix or remove each child; returns the live handler and processor Deployments."""
        namespace, name = children.namespace_of(body), children.name_of(body)
        found: dict[tuple[str, str], dict[str, Any] | None] = {}
        wanted_children = self._wanted(body, replicas)
        lives = [await self.kube.get(ref, namespace, child) for ref, child, _ in wanted_children]
        # Check every name first: a conflict must not leave half a set of children behind.
        for (ref, child, _), live in zip(wanted_children, lives, strict=True):
            if live is not None and not claimable(live, body):
                raise ChildConflict(
                    f"{ref.kind} {namespace}/{child} exists and is not managed by this handler"
                )
        for (ref, child, wanted), live in zip(wanted_children, lives, strict=True):
            if wanted is None:
                if live is not None:
                    await self.kube.delete(ref, namespace, child)
                    CHILD_WRITES.labels(ref.kind, "delete").inc()
                    self._post(post, body, "Normal", "Deleted", f"{ref.kind} {child} is no longer needed")
                continue
            if children.needs_apply(wanted, live):
                # The whole wanted object, every time: server-side apply removes what
                # this manager no longer sends and leaves other managers' fields alone.
                applied = await self.kube.apply(ref, children.with_applied_hash(wanted))
                op = "create" if live is None else "update"
                CHILD_WRITES.labels(ref.kind, op).inc()
                verb = "Created" if live is None else "Updated"
                self._post(post, body, "Normal", verb, f"{verb.lower()} {ref.kind} {child}")
                live = applied if applied is not None else live
            found[(ref.plural, child)] = live
        return (
            found.get((children.DEPLOYMENTS.plural, name)),
            found.get((children.DEPLOYMENTS.plural, queue.processor_name(body))),
        )

    async def cleanup(self, body: Mapping[str, Any]) -> list[str]:
        """Delete every child this CR owns (the finalizer's job); returns what was deleted.

        Garbage collection would remove them too, but only eventually and only on a
        real cluster; deleting them here means the handler's pods are gone before
        the CR is, and nothing is left behind where GC does not run.
        """
        key = (children.namespace_of(body), children.name_of(body))
        deleted: list[str] = []
        self._deleting.add(key)
        try:
            async with self._lock(key):
                for ref, child, _ in reversed(self._wanted(body)):
                    live = await self.kube.get(ref, key[0], child)
                    if live is None or not children.owned_by(live, body):
                        continue
                    if await self.kube.delete(ref, key[0], child):
                        CHILD_WRITES.labels(ref.kind, "delete").inc()
                        deleted.append(ref.kind)
                if (
                    queue.is_dedicated(body)
                    and queue.queue_spec(body).get("deletionPolicy") == queue.DELETE
                    and self.queues.manage
                ):
                    try:
                        if await self.queues.delete(body):
                            deleted.append("Table")
                    except Exception as exc:  # e.g. deletion protection: keep the data, say so
                        log.warning("could not delete a dedicated table", extra={"error": repr(exc)})
        finally:
            self._deleting.discard(key)
            self._locks.pop(key, None)
            with contextlib.suppress(KeyError):
                HANDLER_READY.remove(f"{key[0]}/{key[1]}")
        return deleted

    def _announce(
        self, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], post: EventFn | None
    ) -> None:
        before = status.get_condition(old, status.READY) or {}
        after = status.get_condition(new, status.READY) or {}
        if (before.get("status"), before.get("reason")) == (after.get("status"), after.get("reason")):
            return
        kind = "Normal" if after.get("status") == "True" else "Warning"
        reason = str(after.get("reason") or "Unknown")
        message = str(after.get("message") or "")
        log.info(
            "handler readiness changed",
            extra={"handler": children.name_of(body), "ready": after.get("status"), "reason": reason},
        )
        self._post(post, body, kind, reason, message)

    @staticmethod
    def _post(post: EventFn | None, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        if post is None:
            return
        try:
            post(body, kind, reason, message)
        except Exception:  # an event that cannot be posted must never fail a reconcile
            log.debug("could not post an event", exc_info=True)
