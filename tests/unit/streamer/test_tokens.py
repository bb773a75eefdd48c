"""streamer.tokens: development tokens that the verifier accepts."""

from __future__ import annotations

import time

import jwt
import pytest
from auth_helpers import (
    SECRET,
    hs_verifier,
    reason_of,
)

from streamer.auth import (
    TokenVerifier,
    make_token,
)

# --------------------------------------------------------------------------- make_token


async def test_make_token_round_trip() -> None:
    token = make_token(
        secret=SECRET,
        user="bob",
        tenant="globex",
        permissions=("x",),
        ttl=30,
        issuer="iss",
        audience="aud",
        extra={"role": "admin"},
    )
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    identity = await TokenVerifier(secret=SECRET, issuer="iss", audience="aud").verify(token)
    assert (identity.user_id, identity.tenant_id, identity.permissions) == ("bob", "globex", ("x",))
    assert identity.claims["role"] == "admin"
    assert identity.expires_at is not None and identity.expires_at <= time.time() + 31
    expired = make_token(secret=SECRET, user="bob", tenant="globex", ttl=-600)
    assert (await reason_of(hs_verifier(), expired)).reason == "expired"
    with pytest.raises(ValueError):
        make_token(secret=SECRET, user="", tenant="t")
