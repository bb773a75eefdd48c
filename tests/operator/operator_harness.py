"""kopf against the kmock Kubernetes emulator (see shared/notes/kopf-kmock.md).

``cluster`` is a :class:`kmock.KubernetesEmulator` that also does what an API server
does and kmock does not: it stamps uid, resourceVersion, generation and
creationTimestamp, answers a failed JSON-patch ``test`` with 422, and plays
server-side apply for one field manager at a time: a field that a manager applied
before and leaves out of its next apply is removed (kmock itself treats every
patch body as a merge patch, which never removes anything that is not sent as null). Discovery of
the StreamerHandler resource is taken from crds/streamerhandlers.yaml, so the tests
see the CRD's real names.

``operator`` runs the real operator (``streamer_operator.main.build``) with kopf's
``KopfRunner`` in its own thread and loop, logged in to the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import pathlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import jsonpatch
import kmock
import kopf
import pytest
import yaml
from kmock._internal import dicts as kmock_dicts
from kopf.testing import KopfRunner
from kubernetes import client as k8s
from streamer_operator import children
from streamer_operator.children import Ref
from streamer_operator.main import build
from streamer_operator.options import OperatorOptions
from streamer_operator.reconciler import Reconciler
from streamer_operator.tables import TablesGate

from streamer.config import Settings, load_settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "streamerhandlers.yaml"
_versions = itertools.count(1)
KOPF_EXTRA: list[str] = []


APPLY_PATCH = "application/apply-patch+yaml"


def removed_fields(before: Any, after: Any) -> dict[str, Any]:
    """A merge patch that nulls every mapping key in ``before`` that ``after`` lacks."""
    out: dict[str, Any] = {}
    if not isinstance(before, dict) or not isinstance(after, dict):
        return out
    for key, value in before.items():
        if key not in after:
            out[key] = None
        elif isinstance(value, dict) and isinstance(after[key], dict):
            inner = removed_fields(value, after[key])
            if inner:
                out[key] = inner
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        elif key not in base:
            base[key] = value


class Cluster(kmock.KubernetesEmulator):
    """The emulator plus the object metadata a real API server maintains."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # (resource, namespace, name, field manager) -> the object that manager last applied.
        self.applied: dict[tuple[Any, str | None, str, str], dict[str, Any]] = {}
        # Set: every open watch stream ends and every new watch is answered 500
        # (an API server that lost its watch cache or its etcd), until cleared; with
        # ``watch_hangs`` also set, new watches get no answer at all until cleared.
        self.watch_outage = asyncio.Event()
        self.watch_hangs = False
        self.watch_back = asyncio.Event()  # set while there is no outage (hung watches wait on it)
        self.watch_back.set()

    def start_watch_outage(self, *, hangs: bool = False) -> None:
        self.watch_hangs = hangs
        self.watch_back.clear()
        self.watch_outage.set()

    def end_watch_outage(self) -> None:
        self.watch_outage.clear()
        self.watch_back.set()

    async def _handle(self, request: kmock.Request) -> Any:  # type: ignore[override]
        if request.action == kmock.action.WATCH and self.watch_outage.is_set():
            if self.watch_hangs:
                await self.watch_back.wait()
            else:
                raise kmock.KubernetesError(status=500, reason="InternalError", message="watch outage")
        if request.resource is not None:
            self._stamp(request)
        return await super()._handle(request)

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:  # type: ignore[override]
        """kmock's watch stream, ended when an outage starts."""
        inner = super()._serve_watch(request)
        outage = asyncio.ensure_future(self.watch_outage.wait())
        try:
            while True:
                step = asyncio.ensure_future(anext(inner))
                await asyncio.wait({step, outage}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    return
                try:
                    yield step.result()
                except StopAsyncIteration:
                    return
        finally:
            outage.cancel()
            await inner.aclose()

    def _stamp(self, request: kmock.Request) -> None:
        data = request.data
        manager = request.params.get("fieldManager")
        if request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if manager and meta.get("name"):
                applied_key = (
                    request.resource,
                    request.namespace or meta.get("namespace"),
                    meta["name"],
                    manager,
                )
                self.applied[applied_key] = copy.deepcopy(data)
            if not meta.get("name") and meta.get("generateName"):  # kopf names its Events so
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:8]}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault(
                "creationTimestamp",
                datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            meta["resourceVersion"] = str(next(_versions))
        elif request.action == kmock.action.UPDATE and request.name is not None:
            if request.resource is None:
                return
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return  # kmock answers 404 itself
            current = self.objects[key].raw
            content_type = request.headers.get("Content-Type", "")
            if content_type.startswith(APPLY_PATCH) and manager and isinstance(data, dict):
                applied_key = (request.resource, request.namespace, request.name, manager)
                before = self.applied.get(applied_key, {})
                self.applied[applied_key] = copy.deepcopy(data)
                _deep_merge(data, removed_fields(before, data))
            try:
                if isinstance(data, list):
                    patched = jsonpatch.apply_patch(current, data, in_place=False)
                elif isinstance(data, dict):
                    patched = kmock_dicts.merge_patch_dict(current, data)
                else:
                    return
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
            stamps: dict[str, Any] = {"resourceVersion": str(next(_versions))}
            if patched.get("spec") != current.get("spec"):
                stamps["generation"] = int(current.get("metadata", {}).get("generation", 0)) + 1
            if isinstance(data, list):
                data.extend({"op": "add", "path": f"/metadata/{k}", "value": v} for k, v in stamps.items())
            else:
                meta = data.get("metadata")
                if not isinstance(meta, dict):
                    meta = data["metadata"] = {}
                meta.update(stamps)


def crd_resource_info() -> tuple[str, kmock.ResourceInfo]:
    """The emulator's discovery entry for StreamerHandler, read from the CRD file."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    names = crd["spec"]["names"]
    version = crd["spec"]["versions"][0]
    key = f"{crd['spec']['group']}/{version['name']}/{names['plural']}"
    info = kmock.ResourceInfo(
        kind=names["kind"],
        singular=names["singular"],
        namespaced=crd["spec"]["scope"] == "Namespaced",
        shortnames=set(names.get("shortNames", [])),
        categories=set(names.get("categories", [])),
        subresources=set(version.get("subresources", {})),
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )
    return key, info


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    emulator = Cluster()
    emulator.resources.load_bundled()
    key, info = crd_resource_info()
    emulator.resources[key] = info
    async with emulator, kmock.Server(emulator):
        yield emulator


class Api:
    """A tiny client for the test's own calls to the emulator (create, patch, delete, get)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.url = str(cluster.url).rstrip("/")
        self.session = aiohttp.ClientSession()

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=body) as resp:
            text = await resp.text()
            try:
                data = await resp.json(content_type=None) if text else None
            except ValueError:
                data = text
            return resp.status, data

    async def create(self, ref: Ref, obj: dict[str, Any]) -> dict[str, Any]:
        status, data = await self._call("POST", ref.path(obj["metadata"]["namespace"]), obj)
        assert status in (200, 201), data
        return data  # type: ignore[no-any-return]

    async def patch(self, ref: Ref, namespace: str, name: str, patch: Any, sub: str | None = None) -> Any:
        status, data = await self._call("PATCH", ref.path(namespace, name, sub), patch)
        assert status == 200, data
        return data

    async def delete(self, ref: Ref, namespace: str, name: str) -> None:
        status, data = await self._call("DELETE", ref.path(namespace, name))
        assert status == 200, data

    async def get(self, ref: Ref, namespace: str, name: str) -> dict[str, Any] | None:
        status, data = await self._call("GET", ref.path(namespace, name))
        if status == 404:
            return None
        assert status == 200, data
        return data  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    client = Api(cluster)
    yield client
    await client.close()


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with the last value after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")
        await asyncio.sleep(interval)


def handler_body(
    name: str,
    *,
    actions: list[str] | None = None,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": children.API_VERSION,
        "kind": children.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": "streamer:test",
            "args": ["handler", "examples"],
            "actions": [{"name": a, "mode": "sync", "timeout": "5s"} for a in (actions or ["echo"])],
            **spec,
        },
    }
    return body


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


class Harness:
    """What a test needs: the emulator, a client, the running operator's reconciler."""

    def __init__(self, cluster: Cluster, api: Api, reconciler: Reconciler, runner: KopfRunner) -> None:
        self.cluster = cluster
        self.api = api
        self.reconciler = reconciler
        self.runner = runner

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.api.create(children.HANDLERS, body)

    async def handler(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return await self.api.get(children.HANDLERS, namespace, name)

    async def child(self, ref: Ref, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return await self.api.get(ref, namespace, name)

    async def wait_child(self, ref: Ref, name: str, namespace: str = "default") -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            return await self.child(ref, name, namespace)

        return await eventually(check, what=f"{ref.kind} {name}")  # type: ignore[no-any-return]

    async def wait_condition(
        self, name: str, kind: str, status: str, *, reason: str | None = None, namespace: str = "default"
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            obj = await self.handler(name, namespace)
            cond = condition(obj, kind)
            if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
                return obj
            return None

        return await eventually(check, what=f"{name} {kind}={status} {reason or ''}")  # type: ignore[no-any-return]

    async def make_available(self, name: str, *, ready: int = 1, namespace: str = "default") -> None:
        """What the Deployment controller would do once the pods pass their readiness probe."""
        deployment = await self.wait_child(children.DEPLOYMENTS, name, namespace)
        await self.api.patch(
            children.DEPLOYMENTS,
            namespace,
            name,
            {
                "status": {
                    "observedGeneration": deployment["metadata"].get("generation", 1),
                    "replicas": ready,
                    "updatedReplicas": ready,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                }
            },
            sub="status",
        )


def _watching(cluster: Cluster, plurals: set[str]) -> bool:
    seen = {
        r.resource.plural
        for r in list(cluster)
        if r.action == kmock.action.WATCH and r.resource is not None and r.resource.plural
    }
    return plurals <= seen


async def _settled(cluster: Cluster) -> bool:
    """Every StreamerHandler is fully handled: last-handled spec is the spec, status current."""
    for (resource, _, _), obj in list(cluster.objects.items()):
        if resource.plural != children.PLURAL or obj.deleted:
            continue
        raw = obj.raw
        meta = raw.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return False
        handled = (meta.get("annotations") or {}).get("streamer.dev/last-handled-configuration")
        if not handled or json.loads(handled).get("spec") != raw.get("spec"):
            return False
        if (raw.get("status") or {}).get("observedGeneration") != meta.get("generation"):
            return False
    return True


@contextlib.contextmanager
def _kube_default(url: str) -> Iterator[k8s.ApiClient]:
    configuration = k8s.Configuration()
    configuration.host = url
    api_client = k8s.ApiClient(configuration)
    try:
        yield api_client
    finally:
        api_client.close()


@contextlib.asynccontextmanager
async def run_operator(
    cluster: Cluster,
    api: Api,
    *,
    settings: Settings | None = None,
    options: OperatorOptions | None = None,
    tables: TablesGate | None = None,
    kopf_args: list[str] | None = None,
    wait_watching: bool = True,
) -> AsyncIterator[Harness]:
    """The operator running against ``cluster`` until the block ends.

    ``kopf_args`` replace ``--standalone`` (e.g. peering flags); ``wait_watching=False``
    yields before kopf watches anything (a paused peer never does).
    """
    settings = settings or load_settings({})
    options = options or OperatorOptions(resync_seconds=0.5, manage_tables=False)
    url = str(cluster.url).rstrip("/")
    with _kube_default(url) as api_client:
        registry, reconciler = build(settings=settings, options=options, api_client=api_client, tables=tables)

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url)

        plurals = {children.PLURAL} | {ref.plural for ref in children.CHILD_REFS}
        args = ["--standalone"] if kopf_args is None else kopf_args
        runner = KopfRunner(["run", *args, "--all-namespaces", *KOPF_EXTRA], registry=registry, timeout=30)
        runner.__enter__()
        try:

            async def watching() -> bool:
                return _watching(cluster, plurals)

            if wait_watching:
                await eventually(watching, what="kopf's watches")
                await asyncio.sleep(0.2)  # kmock subscribes after the initial snapshot
            yield Harness(cluster, api, reconciler, runner)
            # Stopping kopf in the middle of handling a change leaves a restarted daemon
            # behind that kopf then waits 5 s for; let it finish what it is doing first.
            with contextlib.suppress(AssertionError):
                await eventually(lambda: _settled(cluster), timeout=5, what="kopf idle")
            await asyncio.sleep(0.1)
        finally:
            # Joined from a worker thread: the emulator is served by this loop, and the
            # operator may still be waiting on it while it shuts down.
            await asyncio.to_thread(runner.__exit__, None, None, None)
        assert runner.exit_code == 0, runner.output


@pytest.fixture
async def operator(cluster: Cluster, api: Api) -> AsyncIterator[Harness]:
    async with run_operator(cluster, api) as harness:
        yield harness
