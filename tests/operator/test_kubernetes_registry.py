"""The cluster source of the handler registry, watching CRs on the emulator."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from operator_harness import Api, Cluster, eventually, handler_body
from streamer_operator import children

from streamer.config import load_settings
from streamer.local.ports import free_port
from streamer.registry.kubernetes import KubernetesRegistry
from streamer.registry.model import RegistryError


def ready_status(endpoint: str, ready: bool = True) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "Test"}],
    }


def handler(
    name: str, actions: list[str], *, ready: bool = True, namespace: str = "default", created: str = ""
) -> dict[str, Any]:
    body = handler_body(name, actions=actions, namespace=namespace)
    body["status"] = ready_status(f"{name}.{namespace}.svc:50061", ready)
    if created:
        body["metadata"]["creationTimestamp"] = created
    return body


@pytest.fixture
async def registry(cluster: Cluster) -> AsyncIterator[KubernetesRegistry]:
    reg = KubernetesRegistry(server=str(cluster.url), retry_seconds=0.05)
    yield reg
    await reg.stop()


async def _watching(cluster: Cluster) -> bool:
    return any(r.action == kmock.action.WATCH for r in list(cluster))


async def test_only_ready_handlers_are_routed_and_changes_are_followed(
    cluster: Cluster, api: Api, registry: KubernetesRegistry
) -> None:
    await api.create(children.HANDLERS, handler("live", ["echo", "health"]))
    await api.create(children.HANDLERS, handler("starting", ["slow"], ready=False))

    await registry.start(timeout=10)
    assert registry.synced
    assert [a.name for a in registry.actions()] == ["echo", "health"]
    echo = registry.lookup("echo")
    assert echo is not None
    assert echo.endpoint == "live.default.svc:50061" and echo.handler == "live" and echo.timeout == 5.0
    assert registry.lookup("slow") is None

    await eventually(lambda: _watching(cluster), what="the watch")
    await asyncio.sleep(0.1)
    await api.patch(
        children.HANDLERS, "default", "starting", {"status": ready_status("starting.default.svc:50061")}
    )

    async def slow_routed() -> bool:
        return registry.lookup("slow") is not None

    await eventually(slow_routed, what="the handler that became Ready")

    await api.patch(children.HANDLERS, "default", "live", {"status": ready_status("x", ready=False)})

    async def echo_gone() -> bool:
        return registry.lookup("echo") is None

    await eventually(echo_gone, what="a handler that stopped being Ready")

    await api.delete(children.HANDLERS, "default", "starting")

    async def all_gone() -> bool:
        return registry.actions() == []

    await eventually(all_gone, what="the deleted handler")


async def test_the_oldest_handler_keeps_a_contested_action(
    cluster: Cluster, api: Api, registry: KubernetesRegistry
) -> None:
    await api.create(children.HANDLERS, handler("newer", ["shared"], created="2030-01-02T00:00:00Z"))
    await api.create(children.HANDLERS, handler("older", ["shared"], created="2030-01-01T00:00:00Z"))
    broken = handler("broken", ["fine"])
    broken["spec"]["actions"][0]["mode"] = "sometimes"
    await api.create(children.HANDLERS, broken)

    await registry.start(timeout=10)
    shared = registry.lookup("shared")
    assert shared is not None and shared.handler == "older"
    assert registry.conflicts and "newer" in registry.conflicts[0]
    assert registry.lookup("fine") is None  # an invalid document is skipped, not fatal


async def test_one_namespace_only(cluster: Cluster, api: Api) -> None:
    await api.create(children.HANDLERS, handler("here", ["here.a"], namespace="team-a"))
    await api.create(children.HANDLERS, handler("there", ["there.a"], namespace="team-b"))
    reg = KubernetesRegistry(server=str(cluster.url), namespace="team-a")
    try:
        await reg.start(timeout=10)
        assert [a.name for a in reg.actions()] == ["here.a"]
        assert reg.actions()[0].namespace == "team-a"
    finally:
        await reg.stop()


async def test_the_token_file_is_read_on_every_request(
    cluster: Cluster, api: Api, tmp_path: pathlib.Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    reg = KubernetesRegistry(server=str(cluster.url), token_file=str(token))
    try:
        await reg.start(timeout=10)
        await eventually(lambda: _watching(cluster), what="the watch")
        auth = {r.headers.get("Authorization") for r in list(cluster) if r.resource is not None}
        assert auth == {"Bearer first-token"}
        # Bound ServiceAccount tokens rotate: the next list or watch must carry the new one.
        token.write_text("rotated-token\n")
        assert (await reg._headers())["Authorization"] == "Bearer rotated-token"
    finally:
        await reg.stop()


async def test_start_gives_up_when_the_api_server_never_answers() -> None:
    reg = KubernetesRegistry(server=f"http://127.0.0.1:{free_port()}", retry_seconds=0.05)
    with pytest.raises(TimeoutError):
        await reg.start(timeout=0.5)
    assert not reg.synced


def test_outside_a_cluster_without_a_server_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RegistryError, match="STREAMER_REGISTRY_FILE"):
        KubernetesRegistry()


def test_in_cluster_uses_the_service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    reg = KubernetesRegistry.from_settings(load_settings({"STREAMER_NAMESPACE": "team-a"}))
    assert reg.server == "https://[fd00::1]:6443"
    assert reg.namespace == "team-a"
    assert reg._token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert reg._ca_file == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
