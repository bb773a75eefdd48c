"""The file registry source: load, lookup, reload on change, keep the last good index."""

from __future__ import annotations

import asyncio
import os
import pathlib
from collections.abc import Callable

import pytest
import yaml

from streamer.registry import Registry, RegistryError
from streamer.registry.file import FileRegistry


def doc(name: str, endpoint: str, *actions: str, mode: str = "sync") -> dict[str, object]:
    return {
        "apiVersion": "streamer.dev/v1alpha1",
        "kind": "StreamerHandler",
        "metadata": {"name": name},
        "spec": {"actions": [{"name": a, "mode": mode, "timeout": "5s"} for a in actions]},
        "status": {"endpoint": endpoint},
    }


def write(path: pathlib.Path, *docs: object) -> None:
    path.write_text(yaml.safe_dump_all(list(docs)))
    # make the change visible to an mtime check even on coarse-grained file systems
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000 + os.getpid()))


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_loads_every_document(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.yaml"
    write(path, doc("a", "127.0.0.1:1", "one", "two"), doc("b", "127.0.0.1:2", "three", mode="async"))
    registry = FileRegistry(str(path), poll_interval=0)
    assert isinstance(registry, Registry)
    await registry.start()
    try:
        assert sorted(a.name for a in registry.actions()) == ["one", "three", "two"]
        three = registry.lookup("three")
        assert three is not None and (three.handler, three.endpoint, three.mode) == (
            "b",
            "127.0.0.1:2",
            "async",
        )
        assert registry.lookup("four") is None
    finally:
        await registry.stop()


async def test_conflicting_action_keeps_the_first(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.yaml"
    write(path, doc("a", "127.0.0.1:1", "one"), doc("b", "127.0.0.1:2", "one", "two"))
    registry = FileRegistry(str(path), poll_interval=0)
    await registry.start()
    spec = registry.lookup("one")
    assert spec is not None and spec.handler == "a"
    assert registry.lookup("two") is not None


async def test_kind_list_is_flattened(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.yaml"
    write(path, {"apiVersion": "v1", "kind": "List", "items": [doc("a", "h:1", "one")]})
    registry = FileRegistry(str(path), poll_interval=0)
    await registry.start()
    assert registry.lookup("one") is not None


@pytest.mark.parametrize(
    "text", ["kind: Nope\n", "::: not yaml [", "kind: StreamerHandler\nmetadata: {name: a}\n"]
)
async def test_a_broken_file_fails_at_start(tmp_path: pathlib.Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError):
        await FileRegistry(str(path), poll_interval=0).start()


async def test_missing_file_fails_at_start(tmp_path: pathlib.Path) -> None:
    with pytest.raises(OSError):
        await FileRegistry(str(tmp_path / "absent.yaml"), poll_interval=0).start()


async def test_reloads_on_change_and_keeps_the_last_good_index(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.yaml"
    write(path, doc("a", "127.0.0.1:1", "one"))
    registry = FileRegistry(str(path), poll_interval=0.02)
    await registry.start()
    try:
        first = registry.generation
        write(path, doc("a", "127.0.0.1:9", "one", "two"))
        await wait_for(lambda: registry.lookup("two") is not None)
        spec = registry.lookup("one")
        assert spec is not None and spec.endpoint == "127.0.0.1:9"
        assert registry.generation == first + 1

        path.write_text("kind: [broken")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
        await asyncio.sleep(0.2)
        assert registry.lookup("two") is not None  # still serving the last good one
        assert registry.generation == first + 1

        write(path, doc("a", "127.0.0.1:9", "three"))
        await wait_for(lambda: registry.lookup("three") is not None)
        assert registry.lookup("two") is None
    finally:
        await registry.stop()
