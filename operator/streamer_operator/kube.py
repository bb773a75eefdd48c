"""The few API calls the operator makes on children and on its CR's status.

Why the ``kubernetes`` client and not kopf's internal patching: kopf only patches the
object a handler is running for, and its generic API client is private. The official
client brings every way of logging in that a user has (in-cluster token with
rotation, kubeconfig with exec plugins for EKS/GKE/AKS) and server-side apply via
``application/apply-patch+yaml``. It is synchronous, so every call runs in a worker
thread and the event loop never blocks; raw JSON (``_preload_content=False``) skips
the client's model classes, which we never need.

Children are written with server-side apply (field manager ``streamer-operator``,
forced): fields the operator stops setting are removed, fields other controllers own
(an HPA's replicas, defaults) are left alone, and applying an unchanged object is a
no-op that triggers no watch event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s

from streamer_operator.children import HANDLERS, Ref
from streamer_operator.options import FIELD_MANAGER

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
REQUEST_TIMEOUT = 30.0


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"{status} {reason}: {body[:300]}")
        self.status = status
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404


class Kube:
    """Get, apply, delete children and patch a StreamerHandler's status."""

    def __init__(self, api: k8s.ApiClient | None = None, *, field_manager: str = FIELD_MANAGER) -> None:
        self.api = api or k8s.ApiClient()
        self.field_manager = field_manager

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any] | None:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            resp = self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except k8s.ApiException as exc:
            raise ApiError(int(exc.status or 0), str(exc.reason), str(exc.body or "")) from None
        data = resp.data
        return json.loads(data) if data else None

    async def _acall(self, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._call, method, path, **kw)

    async def get(self, ref: Ref, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object, or None if it does not exist."""
        try:
            return await self._acall("GET", ref.path(namespace, name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(self, ref: Ref, namespace: str, *, label_selector: str = "") -> list[dict[str, Any]]:
        """The objects of ``ref`` in ``namespace`` matching ``label_selector``."""
        query = [("labelSelector", label_selector)] if label_selector else []
        data = await self._acall("GET", ref.path(namespace), query=query)
        return list((data or {}).get("items") or [])

    async def apply(self, ref: Ref, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Server-side apply ``obj``; creates it when the server cannot apply to a missing object."""
        meta = obj["metadata"]
        query = [("fieldManager", self.field_manager), ("force", "true")]
        try:
            return await self._acall(
                "PATCH",
                ref.path(meta["namespace"], meta["name"]),
                body=dict(obj),
                query=query,
                content_type=APPLY,
            )
        except ApiError as exc:
            # A real API server creates on apply; an emulator without apply answers 404.
            if not exc.not_found:
                raise
        return await self._acall(
            "POST",
            ref.path(meta["namespace"]),
            body=dict(obj),
            query=[("fieldManager", self.field_manager)],
            content_type="application/json",
        )

    async def delete(self, ref: Ref, namespace: str, name: str) -> bool:
        """Delete (dependents in the background); False if it was already gone."""
        try:
            await self._acall(
                "DELETE",
                ref.path(namespace, name),
                body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
                content_type="application/json",
            )
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    async def get_handler(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get(HANDLERS, namespace, name)

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the CR's status subresource (lists such as conditions are replaced whole)."""
        await self._acall(
            "PATCH",
            HANDLERS.path(namespace, name, "status"),
            body={"status": dict(status)},
            content_type=MERGE,
        )

    def close(self) -> None:
        self.api.close()
