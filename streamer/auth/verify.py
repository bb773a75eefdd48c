""":class:`TokenVerifier`: the configured keys, the signature, then the claims.

The algorithm is checked against an allow-list *before* a key is chosen, and the key is
chosen by the algorithm's family (:mod:`streamer.auth.keys`). Only signature verification is
delegated to PyJWT; the claims are checked by :class:`~streamer.auth.claims.ClaimPolicy`.
With several issuers and no issuer→tenant binding the service stops at start. Error messages
never contain the token, and PyJWT's exceptions are not chained into ours (their text may
quote token parts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jwt

from streamer.auth.claims import ClaimPolicy, Identity
from streamer.auth.errors import AuthError
from streamer.auth.jwks import JwksCache, check_jwks_url
from streamer.auth.keys import DEFAULT_ASYMMETRIC, DEFAULT_HMAC, HMAC_ALGORITHMS, key_fits, load_pem
from streamer.config import ConfigError

if TYPE_CHECKING:
    from streamer.config import Settings

__all__ = ["TokenVerifier"]

log = logging.getLogger(__name__)

# Far above any real token (a few KiB at most); stops work on absurd inputs early.
_MAX_TOKEN_CHARS = 16 * 1024
# Only signature verification is delegated to PyJWT; the claims are checked by ClaimPolicy
# so that each failure has its own reason.
_SIGNATURE_ONLY: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


class TokenVerifier:
    """Verifies bearer tokens and turns them into an :class:`Identity`.

    Key sources (at least one): ``secret`` (HS256, development), ``public_key`` (PEM
    public key or certificate) and/or ``jwks_url``. ``jwks_urls`` maps further issuers to
    their own JWKS URL; ``jwks_url`` belongs to ``issuer`` when one is set, else to any
    issuer. With both a PEM key and a JWKS, a token with a ``kid`` is checked against
    the JWKS and one without against the PEM key.

    When ``issuer`` or ``jwks_urls`` is given, ``iss`` must be one of those issuers.
    Configuration mistakes raise :class:`~streamer.config.ConfigError` at once.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        algorithms: Sequence[str] | None = None,
        require_exp: bool = True,
        leeway: float = 30.0,
        jwks_cache_seconds: float = 300.0,
        allowed_tenants: Sequence[str] = (),
        jwks_urls: Mapping[str, str] | None = None,
        jwks_refetch_seconds: float = 10.0,
        jwks_timeout: float = 5.0,
        issuer_tenants: Mapping[str, Sequence[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if secret is not None and not secret:
            raise ConfigError("STREAMER_JWT_SECRET", "must not be empty")
        self._secret: bytes | None = secret.encode() if secret is not None else None
        self._public_key = load_pem(public_key) if public_key else None
        sources: dict[str | None, str] = {}
        if jwks_url:
            check_jwks_url(jwks_url, "STREAMER_JWKS_URL")
            sources[issuer] = jwks_url
        for iss, url in (jwks_urls or {}).items():
            check_jwks_url(url, "STREAMER_JWKS_URLS")
            sources[iss] = url
        if self._secret is None and self._public_key is None and not sources:
            raise ConfigError(
                "STREAMER_JWT_SECRET",
                "no token key configured: set STREAMER_JWT_SECRET (development), "
                "STREAMER_JWT_PUBLIC_KEY or STREAMER_JWKS_URL",
            )
        asymmetric = self._public_key is not None or bool(sources)

        if algorithms is None:
            algs = (DEFAULT_HMAC if self._secret is not None else ()) + (
                DEFAULT_ASYMMETRIC if asymmetric else ()
            )
        else:
            algs = tuple(a.strip() for a in algorithms if a.strip())
        supported = set(jwt.algorithms.get_default_algorithms()) - {"none"}
        for alg in algs:
            if alg.lower() == "none":
                raise ConfigError("STREAMER_JWT_ALGORITHMS", "'none' can never be allowed")
            if alg not in supported:
                raise ConfigError("STREAMER_JWT_ALGORITHMS", f"unsupported algorithm {alg!r}")
            if alg in HMAC_ALGORITHMS and self._secret is None:
                raise ConfigError("STREAMER_JWT_ALGORITHMS", f"{alg} needs STREAMER_JWT_SECRET")
            if alg not in HMAC_ALGORITHMS and not asymmetric:
                raise ConfigError(
                    "STREAMER_JWT_ALGORITHMS", f"{alg} needs STREAMER_JWT_PUBLIC_KEY or STREAMER_JWKS_URL"
                )
        if not algs:
            raise ConfigError("STREAMER_JWT_ALGORITHMS", "no algorithm allowed")
        self.algorithms: tuple[str, ...] = algs

        if self._secret is not None:
            hmac_alg = jwt.algorithms.get_default_algorithms()["HS256"]
            try:
                hmac_alg.prepare_key(self._secret)
            except jwt.InvalidKeyError:
                raise ConfigError("STREAMER_JWT_SECRET", "looks like a PEM/SSH key, not a secret") from None
            if len(self._secret) < 32:
                log.warning("STREAMER_JWT_SECRET is shorter than 32 bytes; use it for development only")

        issuers = frozenset(i for i in [issuer, *(jwks_urls or {})] if i is not None)
        bound: dict[str, frozenset[str]] | None = (
            {iss: frozenset(tenants) for iss, tenants in issuer_tenants.items()} if issuer_tenants else None
        )
        several = len(issuers) > 1 or (None in sources and len(sources) > 1)
        if several and bound is None:
            raise ConfigError(
                "STREAMER_JWT_ISSUER_TENANTS",
                "several issuers are configured: bind each to the tenants it may mint "
                '(e.g. {"https://idp-a.example": ["acme"], "https://idp-b.example": ["globex"]})',
            )
        if bound is not None and issuers:
            unknown = sorted(set(bound) - issuers)
            if unknown:
                raise ConfigError("STREAMER_JWT_ISSUER_TENANTS", f"issuers not configured: {unknown}")
        if audience is None:
            log.warning(
                "STREAMER_JWT_AUDIENCE is not set: tokens minted for any other service by the "
                "same issuer are accepted; set it in production"
            )
        self._claims = ClaimPolicy(
            issuers=issuers,
            audience=audience,
            require_exp=require_exp,
            leeway=float(leeway),
            allowed_tenants=frozenset(allowed_tenants),
            issuer_tenants=bound,
        )
        self._jwks = (
            JwksCache(
                sources,
                cache_seconds=jwks_cache_seconds,
                refetch_seconds=jwks_refetch_seconds,
                timeout=jwks_timeout,
                clock=clock,
            )
            if sources
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """The verifier the settings describe; ConfigError if no key source is configured."""
        return cls(
            secret=settings.jwt_secret,
            public_key=settings.jwt_public_key,
            jwks_url=settings.jwks_url,
            jwks_urls=dict(settings.jwks_urls) or None,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            require_exp=settings.jwt_require_exp,
            leeway=settings.jwt_leeway_seconds,
            jwks_cache_seconds=settings.jwks_cache_seconds,
            allowed_tenants=settings.allowed_tenants,
            issuer_tenants=dict(settings.jwt_issuer_tenants) or None,
        )

    async def verify(self, token: str) -> Identity:
        """The identity of a valid token; :class:`AuthError` with the reason otherwise."""
        if not isinstance(token, str) or not token.strip():
            raise AuthError("missing_token", "empty token")
        token = token.strip()
        if len(token) > _MAX_TOKEN_CHARS:
            raise AuthError("malformed_token", "token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed_token", "token is not a valid JWS compact serialization") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise AuthError("malformed_token", "token header has no alg")
        if alg.lower() == "none":
            raise AuthError("alg_none", "unsigned tokens (alg none) are refused")
        if alg not in self.algorithms:
            raise AuthError("algorithm_not_allowed", f"algorithm {alg[:20]!r} is not allowed")
        key = await self._key_for(token, header, alg)
        try:
            claims = jwt.decode(token, key, algorithms=[alg], options=_SIGNATURE_ONLY)
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "signature verification failed") from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError):
            raise AuthError("algorithm_not_allowed", f"the key cannot verify {alg}") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("malformed_token", "token payload is not a JSON object") from None
        return self._claims.identity(claims)

    async def _key_for(self, token: str, header: Mapping[str, Any], alg: str) -> Any:
        if alg in HMAC_ALGORITHMS:
            # Only ever the secret: a public key is never an HMAC key (no RS/HS confusion).
            return self._secret
        kid = header.get("kid")
        if self._jwks is not None and (kid is not None or self._public_key is None):
            if not isinstance(kid, str) or not kid:
                raise AuthError("unknown_key", "token has no kid to pick a JWKS key")
            try:
                unverified = jwt.decode(token, options={"verify_signature": False})
            except jwt.PyJWTError:
                raise AuthError("malformed_token", "token payload is not a JSON object") from None
            source = self._jwks.source_for(unverified.get("iss"))
            entry = await self._jwks.key(source, kid)
            if not key_fits(alg, entry.key, entry.alg):
                raise AuthError("algorithm_not_allowed", f"the key {kid[:64]!r} cannot verify {alg}")
            return entry.key
        if not key_fits(alg, self._public_key):
            raise AuthError("algorithm_not_allowed", f"the configured public key cannot verify {alg}")
        return self._public_key

    async def close(self) -> None:
        """Close the JWKS HTTP session, if one was opened. Cached keys stay usable."""
        if self._jwks is not None:
            await self._jwks.close()
