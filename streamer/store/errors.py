"""Typed storage errors, so callers branch on meaning rather than on botocore codes."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """DynamoDB could not do what was asked (throttled, unreachable, misconfigured)."""

    retryable: bool = True


class ItemTooLarge(StoreError):
    """DynamoDB refused a write because the item would exceed its size limit (400 KB).

    Never retryable: the same write fails the same way. For a request's end write
    this means the result does not fit (``RESULT_TOO_LARGE``).
    """

    retryable = False


class NotFound(StoreError):
    """The item does not exist."""

    retryable = False


class AlreadyExists(StoreError):
    """A conditional create found an item with the same key; ``existing`` holds it."""

    retryable = False

    def __init__(self, key: str, existing: Any = None) -> None:
        super().__init__(f"{key} already exists")
        self.key = key
        self.existing = existing


class ConditionFailed(StoreError):
    """A conditional write was refused: the item is not in the expected state.

    For requests this is how a double transition is refused (COMPLETED twice, a claim
    by a second owner). ``current`` holds the item as it is now when DynamoDB returned
    it, else None.
    """

    retryable = False

    def __init__(self, key: str, expected: str, current: Any = None) -> None:
        super().__init__(f"{key}: expected {expected}")
        self.key = key
        self.expected = expected
        self.current = current


class TransitionRefused(ConditionFailed):
    """A request state change was refused by its condition (status, owner, attempt)."""
