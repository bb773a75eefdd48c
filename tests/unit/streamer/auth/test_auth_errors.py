"""streamer.auth.errors: AuthError and its reasons."""

from __future__ import annotations

import pytest

from streamer.auth import (
    REASONS,
    AuthError,
)

# --------------------------------------------------------------------------- AuthError


def test_auth_error_carries_reason_status_and_message() -> None:
    err = AuthError("expired", "token has expired")
    assert (err.reason, err.status, str(err)) == ("expired", 401, "token has expired")
    assert AuthError("tenant_not_allowed", "no", status=403).status == 403
    with pytest.raises(ValueError):
        AuthError("something_else", "x")


def test_reasons_are_distinct() -> None:
    assert len(set(REASONS)) == len(REASONS) == 14
