"""The handler registry in a cluster: a list+watch of ``StreamerHandler`` custom resources.

Router and processor keep an in-memory index of every action served by a CR whose
``Serving`` condition is ``True`` (so a handler whose pods are not up yet, or that lost
an action conflict, is never called) and whose ``status.endpoint`` is set. The index
is rebuilt from the documents on every change, with the same parser and the same
"oldest claimant keeps the action" rule as the local YAML registry and the operator.

It speaks plain HTTP to the API server with aiohttp (no extra client library in
every service): in a pod it uses the ServiceAccount's token (re-read on every
request, because bound tokens rotate) and CA; tests and ``kubectl proxy`` pass a
``server`` URL. The watch resumes from the last resourceVersion, relists on ``410
Gone``, and retries with capped backoff while the API server is unreachable; the
last good index keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from streamer.config import Settings
from streamer.registry.model import ActionSpec, RegistryError, build_index, parse_handler
from streamer.retry import Backoff
from streamer.tasks import Background

log = logging.getLogger(__name__)

GROUP = "streamer.dev"
VERSION = "v1alpha1"
PLURAL = "streamerhandlers"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

Key = tuple[str, str]


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def is_ready(doc: Mapping[str, Any]) -> bool:
    """Whether the operator says the handler can be routed to, and gave it an endpoint.

    The ``Serving`` condition decides (it stays True during a rollout, while old pods
    still answer, and while a handler is scaled to zero); a status written by an older
    operator without it falls back to ``Ready``.
    """
    status = doc.get("status") or {}
    if not status.get("endpoint"):
        return False
    by_type = {cond.get("type"): cond for cond in status.get("conditions") or []}
    cond = by_type.get("Serving") or by_type.get("Ready")
    return bool(cond and cond.get("status") == "True")


def _order_key(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (
        str(meta.get("creationTimestamp") or ""),
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
    )


def index_documents(docs: list[Mapping[str, Any]]) -> tuple[dict[str, ActionSpec], list[str]]:
    """The routing index of the Ready documents among ``docs``; invalid ones are skipped."""
    valid = []
    for doc in sorted((d for d in docs if is_ready(d)), key=_order_key):
        try:
            parse_handler(doc)
        except RegistryError as exc:
            log.warning("ignoring an invalid StreamerHandler", extra={"error": str(exc)})
            continue
        valid.append(doc)
    return build_index(valid)


class KubernetesRegistry:
    """Actions by name from the Ready ``StreamerHandler`` CRs of one namespace or all."""

    def __init__(
        self,
        *,
        server: str | None = None,
        namespace: str | None = None,
        token: str | None = None,
        token_file: str | None = None,
        ca_file: str | None = None,
        watch_timeout_seconds: int = 300,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
    ) -> None:
        in_cluster = server is None
        if in_cluster:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise RegistryError(
                    "not running in a cluster (KUBERNETES_SERVICE_HOST unset): "
                    "give the registry a server URL or use STREAMER_REGISTRY_FILE"
                )
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
            token_file = token_file or f"{SA_DIR}/token"
            ca_file = ca_file or f"{SA_DIR}/ca.crt"
        assert server is not None
        self.server = server.rstrip("/")
        self.namespace = namespace or None
        self._token = token
        self._token_file = token_file
        self._ca_file = ca_file
        self.watch_timeout_seconds = watch_timeout_seconds
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self._docs: dict[Key, Mapping[str, Any]] = {}
        self._index: dict[str, ActionSpec] = {}
        self.conflicts: list[str] = []
        self.version = 0  # bumped on every index rebuild; lets callers notice changes
        self._session: aiohttp.ClientSession | None = None
        self._watcher = Background("kubernetes-registry")
        self._synced = asyncio.Event()
        self._changed = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesRegistry:
        """The in-cluster registry for a service: its ServiceAccount, ``STREAMER_NAMESPACE``."""
        return cls(namespace=settings.namespace)

    # --- public API ---------------------------------------------------------------

    async def start(self, *, timeout: float | None = 30.0) -> None:
        """Start watching and return once the first list has been indexed.

        Raises ``TimeoutError`` (after stopping) when the API server did not answer a
        list within ``timeout``; the caller decides whether to exit or go on.
        """
        if self._watcher.running:
            return
        ssl_ctx: ssl.SSLContext | bool = True
        if self._ca_file:
            ssl_ctx = ssl.create_default_context(cafile=self._ca_file)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_ctx),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        self._watcher.start(self._run())
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise TimeoutError(f"no StreamerHandler list from {self.server} within {timeout}s") from None

    async def stop(self) -> None:
        """Stop watching; the last index stays readable."""
        await self._watcher.stop()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def lookup(self, action: str) -> ActionSpec | None:
        """The action's spec, or None when no Ready handler serves it."""
        return self._index.get(action)

    def actions(self) -> list[ActionSpec]:
        """Every routable action, sorted by name."""
        return [self._index[name] for name in sorted(self._index)]

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_changed(self, *, timeout: float | None = None) -> None:
        """Wait for the next index rebuild (for callers and tests that react to changes)."""
        self._changed.clear()
        await asyncio.wait_for(self._changed.wait(), timeout)

    # --- internals ------------------------------------------------------------------

    def _path(self) -> str:
        base = f"/apis/{GROUP}/{VERSION}"
        if self.namespace:
            return f"{base}/namespaces/{self.namespace}/{PLURAL}"
        return f"{base}/{PLURAL}"

    async def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self._token
        if token is None and self._token_file:
            # Bound ServiceAccount tokens rotate: read the file for every request (off the loop).
            text = await asyncio.to_thread(pathlib.Path(self._token_file).read_text, encoding="utf-8")
            token = text.strip()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _run(self) -> None:
        backoff = Backoff(base=self.retry_seconds, cap=self.max_retry_seconds)
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                while True:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except _Gone:
                log.info("StreamerHandler watch expired; listing again")
                continue
            except Exception as exc:  # the API server is down or refused us: keep the last index
                failures += 1
                delay = backoff.delay(failures)
                log.warning(
                    "watching StreamerHandlers failed; retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in": round(delay, 3)},
                )
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        assert self._session is not None
        docs: dict[Key, Mapping[str, Any]] = {}
        params: dict[str, str] = {"limit": "500"}
        version = ""
        while True:
            async with self._session.get(
                self.server + self._path(), params=params, headers=await self._headers()
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(
                        f"list {self._path()}: HTTP {resp.status}: {(await resp.text())[:200]}"
                    )
                body = await resp.json(content_type=None)
            for item in body.get("items") or []:
                docs[self._key(item)] = item
            meta = body.get("metadata") or {}
            version = str(meta.get("resourceVersion") or "")
            if not meta.get("continue"):
                break
            params = {"limit": "500", "continue": str(meta["continue"])}
        self._docs = docs
        self._rebuild()
        self._synced.set()
        return version

    async def _watch(self, version: str) -> str:
        """Apply watch events until the server ends the stream; returns the last resourceVersion."""
        assert self._session is not None
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_timeout_seconds),
        }
        if version:
            params["resourceVersion"] = version
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=10, sock_read=self.watch_timeout_seconds + 30
        )
        async with self._session.get(
            self.server + self._path(), params=params, headers=await self._headers(), timeout=timeout
        ) as resp:
            if resp.status == 410:
                raise _Gone()
            if resp.status != 200:
                raise RuntimeError(f"watch {self._path()}: HTTP {resp.status}: {(await resp.text())[:200]}")
            async for event in self._events(resp):
                version = self._apply(event, version)
        return version

    @staticmethod
    async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        # Lines can be longer than aiohttp's readline limit (big payload schemas): split by hand.
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buffer.strip():
            yield json.loads(buffer)

    def _apply(self, event: Mapping[str, Any], version: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise RuntimeError(f"watch error: {obj.get('message') or obj}")
        if kind == "BOOKMARK":
            return new_version
        key = self._key(obj)
        if kind in ("ADDED", "MODIFIED"):
            self._docs[key] = obj
        elif kind == "DELETED":
            self._docs.pop(key, None)
        else:
            return version
        self._rebuild()
        return new_version

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    def _rebuild(self) -> None:
        index, conflicts = index_documents(list(self._docs.values()))
        if conflicts != self.conflicts and conflicts:
            log.warning("conflicting StreamerHandlers", extra={"conflicts": "; ".join(conflicts)})
        self._index, self.conflicts = index, conflicts
        self.version += 1
        self._changed.set()
