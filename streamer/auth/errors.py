"""Refused tokens: :class:`AuthError` and its stable reasons (metrics and logs use them)."""

from __future__ import annotations

__all__ = ["REASONS", "AuthError"]

REASONS = (
    "missing_token",
    "malformed_token",
    "alg_none",
    "algorithm_not_allowed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "invalid_claim",
    "unknown_key",
    "jwks_unavailable",
    "tenant_not_allowed",
)


class AuthError(Exception):
    """A refused token. ``reason`` is one of :data:`REASONS`; ``status`` the HTTP answer.

    ``str(error)`` is the human message; it never contains the token.
    """

    reason: str
    status: int
    message: str

    def __init__(self, reason: str, message: str, *, status: int = 401) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown auth failure reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"AuthError(reason={self.reason!r}, status={self.status}, message={self.message!r})"
