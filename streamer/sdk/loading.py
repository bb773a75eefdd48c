"""Find a handler's actions by name: what ``streamer handler`` and ``streamer dev`` serve.

The target is looked up in this order:

1. a name from the ``streamer.handlers`` entry points (``examples`` ships with Streamer);
   the entry point is a function returning :class:`~streamer.sdk.Action` instances;
2. ``package.module:function`` — that function, called, returns the actions;
3. ``package.module`` — its ``handlers()`` function if it has one, else one instance of
   every :class:`~streamer.sdk.Action` subclass defined in that module.

Entry points let a handler package be served by name from the same image without this
library importing it (the layering contract).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from streamer.sdk.action import Action


class HandlerLoadError(Exception):
    """The target names no entry point or module with actions."""


def _as_actions(value: Any, *, where: str) -> list[Action]:
    items = list(value) if not isinstance(value, Action) else [value]
    actions: list[Action] = []
    for item in items:
        if inspect.isclass(item) and issubclass(item, Action):
            item = item()
        if not isinstance(item, Action):
            raise HandlerLoadError(f"{where} returned {type(item).__name__}, not an Action")
        actions.append(item)
    if not actions:
        raise HandlerLoadError(f"{where} has no actions")
    return actions


def _call(factory: Callable[[], Any], *, where: str) -> list[Action]:
    return _as_actions(factory(), where=where)


def _import_from_cwd() -> None:
    """Let a module of the current directory be named, as ``python -m`` would.

    A console script (``streamer dev``, ``streamer handler``) starts with its own ``bin/``
    directory first on ``sys.path``, not the working directory, so a handler written next to
    where the command runs (``streamer dev --handler shop.handlers``) was not importable.
    Appended, not prepended: a local file never shadows an installed package.
    """
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)


def load_actions(target: str) -> tuple[str, list[Action]]:
    """(handler name, actions) for an entry point name, ``module:function`` or module path."""
    for ep in entry_points(group="streamer.handlers"):
        if ep.name == target:
            return ep.name, _call(ep.load(), where=f"entry point streamer.handlers:{ep.name}")
    module_name, _, attr = target.partition(":")
    _import_from_cwd()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            known = sorted(ep.name for ep in entry_points(group="streamer.handlers"))
            raise HandlerLoadError(
                f"{target!r} is neither a streamer.handlers entry point "
                f"({', '.join(known) or 'none installed'}) nor an importable module"
            ) from None
        raise
    default_name = getattr(module, "NAME", None) or re.sub(r"[^a-z0-9-]+", "-", module_name.lower()).strip(
        "-"
    )
    if attr:
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise HandlerLoadError(f"{module_name} has no callable {attr!r}")
        return default_name, _call(factory, where=target)
    factory = getattr(module, "handlers", None)
    if callable(factory):
        return default_name, _call(factory, where=f"{module_name}.handlers()")
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Action)
        and obj is not Action
        and obj.__module__ == module.__name__
        and obj.name
    ]
    return default_name, _as_actions(classes, where=module_name)
