"""Claims → :class:`Identity`: issuer, audience, times, identity claims, tenant bindings.

Claims are checked here rather than by PyJWT so each failure has its own reason:
``iss``/``aud`` (when configured), ``exp``/``nbf``/``iat`` with leeway, then ``sub``,
``tenant_id`` (each at most :data:`MAX_CLAIM_BYTES`: they become parts of DynamoDB keys),
``permissions`` and the issuer's tenants. A token that carries ``aud`` while no audience is
configured is accepted (DESIGN: "checked when configured"). With several issuers, each
issuer is bound to the tenants it may mint (``STREAMER_JWT_ISSUER_TENANTS``): otherwise any
trusted identity provider could issue tokens for any tenant.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from streamer.auth.errors import AuthError

__all__ = ["ANY_TENANT", "MAX_CLAIM_BYTES", "ClaimPolicy", "Identity"]

#: ``sub`` and ``tenant_id`` are parts of DynamoDB keys (``streamer.store.keys``); this
#: keeps any key built from them far below DynamoDB's 2,048-byte key limit.
MAX_CLAIM_BYTES = 256
#: In ``STREAMER_JWT_ISSUER_TENANTS``, an issuer bound to ``*`` may mint any tenant.
ANY_TENANT = "*"


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who is on the other end of a connection, from a verified token."""

    user_id: str
    tenant_id: str
    permissions: tuple[str, ...]
    expires_at: float | None
    # Read-only view of every claim; excluded from hashing (a mapping is not hashable).
    claims: Mapping[str, Any] = dataclasses.field(hash=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class ClaimPolicy:
    """What a verified token's claims must say. Empty ``issuers``: ``iss`` is not checked;
    ``audience`` None: ``aud`` is not checked; ``issuer_tenants`` None: no binding."""

    issuers: frozenset[str] = frozenset()
    audience: str | None = None
    require_exp: bool = True
    leeway: float = 30.0
    allowed_tenants: frozenset[str] = frozenset()
    issuer_tenants: Mapping[str, frozenset[str]] | None = None

    def identity(self, claims: dict[str, Any]) -> Identity:
        """The identity the claims name; :class:`AuthError` with the reason otherwise."""
        now = time.time()
        if self.issuers:
            iss = claims.get("iss")
            if iss is None:
                raise AuthError("missing_claim", "token has no iss claim")
            if not isinstance(iss, str) or iss not in self.issuers:
                raise AuthError("wrong_issuer", "token issuer is not accepted")
        if self.audience is not None:
            aud = claims.get("aud")
            if aud is None:
                raise AuthError("missing_claim", "token has no aud claim")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if self.audience not in [a for a in audiences if isinstance(a, str)]:
                raise AuthError("wrong_audience", "token audience does not include this service")

        exp = claims.get("exp")
        if exp is None:
            if self.require_exp:
                raise AuthError("missing_claim", "token has no exp claim")
        elif not _is_number(exp):
            raise AuthError("invalid_claim", "exp must be a number (seconds since the epoch)")
        elif exp <= now - self.leeway:
            raise AuthError("expired", "token has expired")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if not _is_number(value):
                raise AuthError("invalid_claim", f"{name} must be a number (seconds since the epoch)")
            if value > now + self.leeway:
                raise AuthError("not_yet_valid", f"token is not valid yet ({name} in the future)")

        identity: dict[str, str] = {}
        for name in ("sub", "tenant_id"):
            value = claims.get(name)
            if value is None:
                raise AuthError("missing_claim", f"token has no {name} claim")
            if not isinstance(value, str) or not value.strip():
                raise AuthError("invalid_claim", f"{name} must be a non-empty string")
            if len(value.encode("utf-8", "surrogatepass")) > MAX_CLAIM_BYTES:
                raise AuthError("invalid_claim", f"{name} is longer than {MAX_CLAIM_BYTES} bytes")
            identity[name] = value
        permissions = claims.get("permissions")
        if permissions is None:
            permissions = []
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise AuthError("invalid_claim", "permissions must be a list of strings")

        if self.allowed_tenants and identity["tenant_id"] not in self.allowed_tenants:
            raise AuthError("tenant_not_allowed", "tenant is not allowed to connect", status=403)
        if self.issuer_tenants is not None:
            iss = claims.get("iss")
            minted = self.issuer_tenants.get(iss) if isinstance(iss, str) else None
            if minted is None or (ANY_TENANT not in minted and identity["tenant_id"] not in minted):
                raise AuthError(
                    "tenant_not_allowed", "the token's issuer may not mint this tenant", status=403
                )
        return Identity(
            user_id=identity["sub"],
            tenant_id=identity["tenant_id"],
            permissions=tuple(permissions),
            expires_at=float(exp) if exp is not None else None,
            claims=MappingProxyType(claims),
        )
