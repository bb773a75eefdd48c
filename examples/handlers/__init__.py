"""The example handlers shipped in the Streamer image (`streamer handler examples`).

:func:`handlers` is the ``streamer.handlers`` entry point ``examples``: it returns a
fresh instance of every example action.
"""

from __future__ import annotations

from examples.handlers.actions import (
    ACTIONS,
    BulkOperation,
    Delay,
    Echo,
    EchoAsync,
    GenerateReport,
    Health,
    KnowledgeQuery,
    Ping,
    ProcessData,
    ValidateUser,
)
from streamer.sdk import Action

NAME = "examples"

__all__ = [
    "ACTIONS",
    "NAME",
    "BulkOperation",
    "Delay",
    "Echo",
    "EchoAsync",
    "GenerateReport",
    "Health",
    "KnowledgeQuery",
    "Ping",
    "ProcessData",
    "ValidateUser",
    "handlers",
]


def handlers() -> list[Action]:
    """Every example action, ready for :func:`streamer.sdk.serve`."""
    return [cls() for cls in ACTIONS]
