"""The development JWT secret shared by ``streamer dev``, ``streamer token`` and ``streamer request``.

DEVELOPMENT ONLY. The secret below is public (it is in this file), so any token made
with it is forgeable by anyone: a deployment must set ``STREAMER_JWT_SECRET`` to a real
secret or, better, use RS256/ES256 (``STREAMER_JWT_PUBLIC_KEY`` / ``STREAMER_JWKS_URL``).
It exists so that a fresh clone can run ``streamer dev`` in one terminal and
``streamer request echo`` in another without configuring anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from streamer.tokens import make_token

#: Public, fixed, development-only HS256 secret (>= 32 bytes so PyJWT does not warn).
DEV_JWT_SECRET = "streamer-development-secret-NOT-FOR-PRODUCTION-0001"
DEV_USER = "dev-user"
DEV_TENANT = "dev-tenant"


def jwt_secret(env: Mapping[str, str] | None = None) -> str:
    """``STREAMER_JWT_SECRET`` when set, else :data:`DEV_JWT_SECRET`."""
    source = os.environ if env is None else env
    return source.get("STREAMER_JWT_SECRET") or DEV_JWT_SECRET


def dev_token(
    *,
    user: str = DEV_USER,
    tenant: str = DEV_TENANT,
    permissions: Sequence[str] = (),
    ttl: float = 3600,
    secret: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """An HS256 token for the local stack (signed with :func:`jwt_secret` unless ``secret``)."""
    source = os.environ if env is None else env
    return make_token(
        secret=secret or jwt_secret(source),
        user=user,
        tenant=tenant,
        permissions=permissions,
        ttl=ttl,
        issuer=source.get("STREAMER_JWT_ISSUER") or None,
        audience=source.get("STREAMER_JWT_AUDIENCE") or None,
    )
