"""Keys, tokens and verifiers shared by the streamer.auth unit tests."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwtlib import public_pem

from streamer.auth import (
    AuthError,
    TokenVerifier,
)

# 64 bytes: long enough for HS512 too, so PyJWT does not warn about key length.
SECRET = "unit-test-secret-long-enough-for-every-hmac-algorithm-0123456789"
OTHER_SECRET = "another-secret-long-enough-for-every-hmac-algorithm-0123456789ab"

# One key of each kind for the whole module: RSA generation is the slow part.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())


RSA_PEM = public_pem(RSA_KEY)
EC_PEM = public_pem(EC_KEY)


def claims(**overrides: Any) -> dict[str, Any]:
    now = time.time()
    base: dict[str, Any] = {
        "sub": "user-1",
        "tenant_id": "acme",
        "permissions": ["reports:read"],
        "iat": int(now),
        "exp": int(now) + 600,
    }
    for name, value in overrides.items():
        if value is DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


DROP = object()


def hs(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def hs_verifier(**kw: Any) -> TokenVerifier:
    return TokenVerifier(secret=SECRET, **kw)


async def reason_of(verifier: TokenVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    return info.value


def tamper_signature(token: str) -> str:
    head, body, sig = token.split(".")
    # A middle character carries six full bits (the last may only carry padding bits).
    i = len(sig) // 2
    return f"{head}.{body}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1 :]}"
