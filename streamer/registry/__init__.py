"""The handler registry: which handler serves an action, and how to call it.

Two sources behind one interface: :class:`~streamer.registry.file.FileRegistry`
(a YAML file of StreamerHandler documents, for the local stack) and
:class:`~streamer.registry.kubernetes.KubernetesRegistry` (a watch of Ready
StreamerHandler custom resources, in the cluster).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from streamer.registry.model import ActionSpec, RegistryError, build_index, parse_duration, parse_handler

if TYPE_CHECKING:
    from streamer.config import Settings

__all__ = [
    "ActionSpec",
    "Registry",
    "RegistryError",
    "build_index",
    "make_registry",
    "parse_duration",
    "parse_handler",
]


@runtime_checkable
class Registry(Protocol):
    """What router and processor need from a registry source."""

    async def start(self) -> None:
        """Load the initial state (and begin watching, for live sources)."""

    async def stop(self) -> None:
        """Stop watching; release resources."""

    def lookup(self, action: str) -> ActionSpec | None:
        """The action's spec, or None when no (ready) handler serves it."""

    def actions(self) -> list[ActionSpec]:
        """Every action currently served."""


def make_registry(settings: Settings) -> Registry:
    """The registry a service runs with: the YAML file when one is configured, else the cluster watch."""
    if settings.registry_file:
        from streamer.registry.file import FileRegistry

        return FileRegistry(settings.registry_file)
    from streamer.registry.kubernetes import KubernetesRegistry  # only in a cluster

    return KubernetesRegistry.from_settings(settings)
