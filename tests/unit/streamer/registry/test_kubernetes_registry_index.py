"""The pure parts of the Kubernetes registry: which documents are routed, watch events."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.registry import Registry
from streamer.registry.kubernetes import KubernetesRegistry, _Gone, index_documents, is_ready


def doc(
    name: str, actions: list[str], *, ready: bool = True, endpoint: str = "e:1", created: str = ""
) -> Any:
    return {
        "apiVersion": "streamer.dev/v1alpha1",
        "kind": "StreamerHandler",
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, "resourceVersion": "7"},
        "spec": {"image": "i", "actions": [{"name": a} for a in actions]},
        "status": {
            "endpoint": endpoint,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_is_ready_needs_the_condition_and_an_endpoint() -> None:
    assert is_ready(doc("a", ["x"]))
    assert not is_ready(doc("a", ["x"], ready=False))
    assert not is_ready(doc("a", ["x"], endpoint=""))
    assert not is_ready({"status": {"endpoint": "e:1"}})


def test_index_orders_by_age_not_by_arrival() -> None:
    newer = doc("newer", ["x"], created="2030-01-02T00:00:00Z")
    older = doc("older", ["x"], created="2030-01-01T00:00:00Z")
    index, conflicts = index_documents([newer, older])
    assert index["x"].handler == "older"
    assert len(conflicts) == 1


def test_watch_events_update_the_index_and_gone_means_relist() -> None:
    reg = KubernetesRegistry(server="http://127.0.0.1:1")
    assert reg._apply({"type": "ADDED", "object": doc("a", ["x"])}, "1") == "7"
    assert reg.lookup("x") is not None
    assert reg._apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}, "7") == "9"
    reg._apply({"type": "DELETED", "object": doc("a", ["x"])}, "9")
    assert reg.lookup("x") is None
    with pytest.raises(_Gone):
        reg._apply({"type": "ERROR", "object": {"code": 410, "message": "too old"}}, "9")
    with pytest.raises(RuntimeError, match="forbidden"):
        reg._apply({"type": "ERROR", "object": {"code": 403, "message": "forbidden"}}, "9")


def test_it_is_a_registry() -> None:
    reg: Registry = KubernetesRegistry(server="http://127.0.0.1:1")
    assert isinstance(reg, Registry)
