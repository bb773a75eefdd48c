"""Making HS256 development tokens: ``streamer token``, ``streamer request``, tests.

Apart from :mod:`streamer.auth` (verification, server side) so that the client's light
install (aiohttp, PyJWT, rich) can make a development token without the server's libraries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

__all__ = ["make_token"]


def make_token(
    *,
    secret: str,
    user: str,
    tenant: str,
    permissions: Sequence[str] = (),
    ttl: float = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 development token (``streamer token``, tests). ``extra`` claims win."""
    if not user or not tenant:
        raise ValueError("user and tenant must not be empty")
    now = time.time()
    claims: dict[str, Any] = {
        "sub": user,
        "tenant_id": tenant,
        "permissions": list(permissions),
        "iat": int(now),
        "exp": int(now + ttl),
        "jti": uuid.uuid4().hex,
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm="HS256")
