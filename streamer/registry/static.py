"""A fixed registry built from StreamerHandler documents in memory (tests, embedding).

Same parsing and conflict rule as the file and Kubernetes sources
(:func:`~streamer.registry.model.build_index`), no I/O and no watching; ``replace``
swaps the documents, e.g. to simulate a handler moving to another endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streamer.registry.model import ActionSpec, build_index


class StaticRegistry:
    """:class:`~streamer.registry.Registry` over a list of StreamerHandler documents."""

    def __init__(self, documents: Iterable[Mapping[str, Any]] = ()) -> None:
        self._index: dict[str, ActionSpec] = {}
        self.conflicts: list[str] = []
        self.replace(documents)

    def replace(self, documents: Iterable[Mapping[str, Any]]) -> None:
        """Use these documents from now on (raises RegistryError for a bad one)."""
        self._index, self.conflicts = build_index(list(documents))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def lookup(self, action: str) -> ActionSpec | None:
        return self._index.get(action)

    def actions(self) -> list[ActionSpec]:
        return list(self._index.values())
