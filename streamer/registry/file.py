"""The local registry source: a YAML file of ``StreamerHandler`` documents.

The local stack has no Kubernetes API, so router and processor read the same
documents the operator would reconcile, each carrying its ``status.endpoint``. The
file is polled (mtime and size every ``poll_interval`` seconds) and reloaded when it
changes; a broken edit is logged and the last good index kept, so a typo never
takes routing down. A broken file at start is an error: the service must not start
serving nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import yaml

from streamer.registry.model import ActionSpec, RegistryError, build_index
from streamer.tasks import Background, every

log = logging.getLogger(__name__)


def load_documents(text: str, *, source: str = "registry") -> list[Mapping[str, Any]]:
    """Every non-empty YAML document of ``text`` (a ``kind: List`` is flattened)."""
    try:
        raw = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: invalid YAML: {exc}") from None
    docs: list[Mapping[str, Any]] = []
    for doc in raw:
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            docs.extend(doc["items"])
        else:
            docs.append(doc)
    return docs


def parse_file_text(text: str, *, source: str = "registry") -> tuple[dict[str, ActionSpec], list[str]]:
    """The action index of a registry file's text, and the conflicts found."""
    return build_index(load_documents(text, source=source))


class FileRegistry:
    """:class:`~streamer.registry.Registry` over a YAML file, reloaded when it changes."""

    def __init__(self, path: str, *, poll_interval: float = 2.0) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self._index: dict[str, ActionSpec] = {}
        self._stamp: tuple[float, int] | None = None
        self._poller = Background(f"registry-poll:{path}")
        #: Bumped on every successful (re)load, so callers can notice changes.
        self.generation = 0

    def _stat(self) -> tuple[float, int]:
        st = os.stat(self.path)
        return (st.st_mtime, st.st_size)

    def _read(self) -> tuple[tuple[float, int], str]:
        stamp = self._stat()
        with open(self.path, encoding="utf-8") as fh:
            return stamp, fh.read()

    async def reload(self) -> bool:
        """Read and parse the file now; True when the index was replaced.

        Raises :class:`RegistryError` (or ``OSError``) when the file is unusable.
        """
        stamp, text = await asyncio.to_thread(self._read)
        index, conflicts = parse_file_text(text, source=self.path)
        for conflict in conflicts:
            log.warning("registry conflict: %s", conflict, extra={"registry": self.path})
        self._index = index
        self._stamp = stamp
        self.generation += 1
        log.info("registry loaded: %d action(s)", len(index), extra={"registry": self.path})
        return True

    async def start(self) -> None:
        await self.reload()
        if not self._poller.running and self.poll_interval > 0:
            self._poller.start(every(self.poll_interval, self._poll_once, what="registry reload", logger=log))

    async def stop(self) -> None:
        await self._poller.stop()

    async def _poll_once(self) -> None:
        try:
            stamp = await asyncio.to_thread(self._stat)
            if stamp == self._stamp:
                return
            await self.reload()
        except (OSError, RegistryError) as exc:
            log.error(
                "registry reload failed, keeping the last good one: %s",
                exc,
                extra={"registry": self.path},
            )
            with contextlib.suppress(OSError):
                self._stamp = await asyncio.to_thread(self._stat)  # do not retry until it changes again

    def lookup(self, action: str) -> ActionSpec | None:
        return self._index.get(action)

    def actions(self) -> list[ActionSpec]:
        return list(self._index.values())
