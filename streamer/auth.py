"""JWT verification for the WebSocket gateway (DESIGN §2 "Auth").

The connect service authenticates the HTTP upgrade *before* it becomes a WebSocket, so a
refused client gets a plain 401/403 and never a socket. Everything it needs is here:

- :func:`extract_token` finds the token where clients can put it. Browsers cannot set
  headers on ``new WebSocket()``, which is why the query string and the
  ``Sec-WebSocket-Protocol`` header are accepted too; the latter also tells the server
  which subprotocol to select: another protocol offered with the token (``bearer``,
  ``streamer.v1``), never the token itself (a response header is logged and cached by
  proxies as freely as a URL), so a browser must offer one besides the token.
- :class:`TokenVerifier` checks the signature and the claims and returns an
  :class:`Identity`. Every refusal is an :class:`AuthError` with a stable ``reason``
  (one of :data:`REASONS`) for metrics and logs, and an HTTP ``status``.

Security decisions, each deliberate:

- The algorithm is checked against an allow-list *before* a key is chosen, and the key
  is chosen by the algorithm's family: HMAC tokens are only ever verified with the
  configured secret, never with a public key. That is what defeats the classic RS/HS
  confusion (an HS256 token "signed" with the public PEM as the HMAC secret).
- Default algorithms follow the key kind: a secret allows HS256 only; a PEM key or a
  JWKS URL allows RS256 and ES256 only. A key that cannot do the token's algorithm
  (an ES256 token against an RSA key) is refused as ``algorithm_not_allowed``.
- JWKS keys are cached per ``(issuer, kid)``: the token's ``iss`` (read unverified, only
  to pick the key source, and verified afterwards) selects the JWKS it may be checked
  against, so a key published by one issuer never verifies another issuer's token.
  Symmetric (``oct``) keys in a JWKS are ignored. An unknown ``kid`` refetches at most
  once per ``jwks_refetch_seconds``, a failed fetch is not retried more often either, and
  concurrent misses share one fetch, so a burst of bad tokens cannot become a fetch
  storm against the identity provider. Expired keys are not used while the provider
  is unreachable: the answer is then ``jwks_unavailable`` (HTTP 401).
- JWKS URLs must be ``https://`` (``http://`` only to a loopback address, for
  development and tests): keys fetched in clear could be replaced on the way.
- With several issuers, each issuer is bound to the tenants it may mint
  (``STREAMER_JWT_ISSUER_TENANTS``): otherwise any trusted identity provider could
  issue tokens for any tenant. Several issuers without a binding stop the service at
  start.
- Claims are checked by this module rather than by PyJWT so each failure has its own
  reason: ``iss``/``aud`` (when configured), ``exp``/``nbf``/``iat`` with leeway, then
  ``sub``, ``tenant_id`` (each at most :data:`MAX_CLAIM_BYTES`: they become parts of
  DynamoDB keys), ``permissions`` and the issuer's tenants. A token that carries ``aud``
  while no audience is configured is accepted (DESIGN: "checked when configured"), and
  the verifier logs a warning at start: production deployments should configure it.
- Error messages never contain the token, and PyJWT's exceptions are not chained into
  ours (their text may quote token parts).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import ipaddress
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from streamer.config import ConfigError
from streamer.metrics import counter
from streamer.tokens import make_token

if TYPE_CHECKING:
    from streamer.config import Settings

__all__ = [
    "MAX_CLAIM_BYTES",
    "REASONS",
    "AuthError",
    "Identity",
    "TokenSource",
    "TokenVerifier",
    "extract_token",
    "make_token",
]

log = logging.getLogger(__name__)

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

_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
    "ES521": ec.SECP521R1,
    "ES256K": ec.SECP256K1,
}
_DEFAULT_HMAC = ("HS256",)
_DEFAULT_ASYMMETRIC = ("RS256", "ES256")
# Far above any real token (a few KiB at most); stops work on absurd inputs early.
_MAX_TOKEN_CHARS = 16 * 1024
_MAX_JWKS_BYTES = 1024 * 1024
#: ``sub`` and ``tenant_id`` are parts of DynamoDB keys (``streamer.store.keys``); this
#: keeps any key built from them far below DynamoDB's 2,048-byte key limit.
MAX_CLAIM_BYTES = 256
#: In ``STREAMER_JWT_ISSUER_TENANTS``, an issuer bound to ``*`` may mint any tenant.
ANY_TENANT = "*"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
# Only signature verification is delegated to PyJWT; the claims are checked below so
# that each failure has its own reason.
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

_jwks_fetches = counter(
    "streamer_jwks_fetches_total", "JWKS documents fetched, by result (ok, error).", ["result"]
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


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who is on the other end of a connection, from a verified token."""

    user_id: str
    tenant_id: str
    permissions: tuple[str, ...]
    expires_at: float | None
    # Read-only view of every claim; excluded from hashing (a mapping is not hashable).
    claims: Mapping[str, Any] = dataclasses.field(hash=False)


@dataclasses.dataclass(frozen=True)
class TokenSource:
    """Where :func:`extract_token` found the token.

    ``subprotocol`` is set only for ``source == "subprotocol"``: the value the server must
    select (echo in ``Sec-WebSocket-Protocol``) so the browser accepts the handshake.
    """

    token: str
    source: str
    subprotocol: str | None


# --------------------------------------------------------------------------- extraction


def _lookup(mapping: Mapping[str, str], name: str) -> list[str]:
    """All values of ``name``, case-insensitively, for plain dicts and multidicts alike."""
    wanted = name.lower()
    return [str(value) for key, value in mapping.items() if key.lower() == wanted]


def _bearer(value: str, *, bare_allowed: bool) -> str | None:
    """The token of ``Bearer <t>`` (scheme case-insensitive), or the bare value if allowed."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        token = rest.strip()
        return token or None
    if bare_allowed and value and " " not in value:
        return value
    return None


def _looks_like_jwt(item: str) -> bool:
    """Three base64url segments whose first decodes to a JSON object (``{...``).

    Decoding the header tells a token apart from dotted protocol names such as
    ``graphql.transport.ws``.
    """
    if not _JWT_SHAPE.match(item):
        return False
    head = item.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    except (binascii.Error, ValueError):
        return False
    return decoded.lstrip().startswith(b"{")


def extract_token(*, headers: Mapping[str, str], query: Mapping[str, str]) -> TokenSource:
    """Find the bearer token of a WebSocket upgrade request.

    Sources, first match wins: the ``Authorization: Bearer`` header; the ``Authorization``
    query parameter (``Bearer <t>`` or the bare token); the ``token`` query parameter;
    the ``Sec-WebSocket-Protocol`` header, where the item shaped like a JWT is the token
    and the subprotocol to select is the first other item offered (``bearer``,
    ``streamer.v1``...); when the token was offered alone there is none (the token is
    never echoed back).
    Header and parameter names are matched case-insensitively.

    Raises ``AuthError("missing_token")`` when no source holds a token.
    """
    for value in _lookup(headers, "Authorization"):
        token = _bearer(value, bare_allowed=False)
        if token:
            return TokenSource(token=token, source="header", subprotocol=None)
    for value in _lookup(query, "Authorization"):
        token = _bearer(value, bare_allowed=True)
        if token:
            return TokenSource(token=token, source="query_authorization", subprotocol=None)
    for value in _lookup(query, "token"):
        token = value.strip()
        if token:
            return TokenSource(token=token, source="query_token", subprotocol=None)
    offered = [
        item.strip() for value in _lookup(headers, "Sec-WebSocket-Protocol") for item in value.split(",")
    ]
    offered = [item for item in offered if item]
    token = next((item for item in offered if _looks_like_jwt(item)), None)
    if token is not None:
        # Never the token itself: it would be echoed in the response header.
        others = [item for item in offered if item != token and not _looks_like_jwt(item)]
        return TokenSource(token=token, source="subprotocol", subprotocol=others[0] if others else None)
    raise AuthError("missing_token", "no bearer token in the Authorization header, query or subprotocol")


# --------------------------------------------------------------------------- keys

_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


def _key_fits(alg: str, key: Any, declared_alg: str | None = None) -> bool:
    """Whether ``key`` can verify ``alg`` (and the JWK's own ``alg``, if any, agrees)."""
    if declared_alg is not None and declared_alg != alg:
        return False
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _EC_CURVES[alg])
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _load_pem(pem: str) -> _PublicKey:
    """A public key from a ``PUBLIC KEY`` PEM or from a certificate; ConfigError otherwise."""
    data = pem.replace("\\n", "\n").strip().encode()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "STREAMER_JWT_PUBLIC_KEY", f"not a PEM public key or certificate ({type(exc).__name__})"
        ) from None
    if not isinstance(key, _PublicKey):
        raise ConfigError("STREAMER_JWT_PUBLIC_KEY", f"unsupported key type {type(key).__name__}")
    return key


@dataclasses.dataclass(frozen=True)
class _Jwk:
    key: Any
    alg: str | None  # the JWK's declared "alg", which then binds the key to it


@dataclasses.dataclass
class _SourceState:
    url: str
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    fetched_at: float | None = None  # last successful fetch
    attempted_at: float | None = None  # last fetch attempt, successful or not
    failed: bool = False
    generation: int = 0


class _JwksCache:
    """JWKS keys by ``(issuer, kid)``, one source URL per issuer (``None``: any issuer)."""

    def __init__(
        self,
        sources: Mapping[str | None, str],
        *,
        cache_seconds: float,
        refetch_seconds: float,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._states = {issuer: _SourceState(url=url) for issuer, url in sources.items()}
        self._keys: dict[tuple[str | None, str], _Jwk] = {}
        self._cache_seconds = cache_seconds
        self._refetch_seconds = refetch_seconds
        self._timeout = timeout
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def source_for(self, iss: Any) -> str | None:
        """The source binding a token with this (unverified) ``iss`` is checked against.

        Raises ``missing_claim``/``wrong_issuer`` when no JWKS is configured for it.
        """
        if isinstance(iss, str) and iss in self._states:
            return iss
        if None in self._states:
            return None
        if iss is None:
            raise AuthError("missing_claim", "token has no iss claim")
        raise AuthError("wrong_issuer", "no JWKS is configured for the token's issuer")

    async def key(self, issuer: str | None, kid: str) -> _Jwk:
        state = self._states[issuer]
        now = self._clock()
        fresh = state.fetched_at is not None and now - state.fetched_at < self._cache_seconds
        recently_tried = state.attempted_at is not None and now - state.attempted_at < self._refetch_seconds
        if fresh:
            found = self._keys.get((issuer, kid))
            if found is not None:
                return found
            if recently_tried:
                raise AuthError("unknown_key", "no key with the token's kid for its issuer")
        elif state.failed and recently_tried:
            raise AuthError("jwks_unavailable", "the JWKS could not be fetched recently; try again later")
        await self._refresh(issuer, state)
        found = self._keys.get((issuer, kid))
        if found is None:
            raise AuthError("unknown_key", "no key with the token's kid for its issuer")
        return found

    async def _refresh(self, issuer: str | None, state: _SourceState) -> None:
        """Fetch the issuer's JWKS once, however many verifications are waiting for it."""
        seen = state.generation
        async with state.lock:
            if state.generation != seen:  # fetched (or failed) while we waited
                if state.failed:
                    raise AuthError("jwks_unavailable", "the JWKS could not be fetched")
                return
            state.attempted_at = self._clock()
            try:
                keys = await self._fetch(state.url)
            except _FetchError as exc:
                state.failed = True
                state.generation += 1
                _jwks_fetches.labels(result="error").inc()
                log.warning("JWKS fetch failed", extra={"jwks_url": state.url, "error": str(exc)})
                raise AuthError("jwks_unavailable", "the JWKS could not be fetched") from None
            _jwks_fetches.labels(result="ok").inc()
            state.failed = False
            state.generation += 1
            state.fetched_at = self._clock()
            for cache_key in [k for k in self._keys if k[0] == issuer]:
                del self._keys[cache_key]
            for kid, jwk_key in keys.items():
                self._keys[(issuer, kid)] = jwk_key

    async def _fetch(self, url: str) -> dict[str, _Jwk]:
        if self._closed:
            raise _FetchError("verifier is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        try:
            async with self._session.get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise _FetchError(f"HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body.extend(chunk)
                    if len(body) > _MAX_JWKS_BYTES:
                        raise _FetchError("JWKS document too large")
            document = json.loads(body)
        except _FetchError:
            raise
        except Exception as exc:  # any failure to get a document is "unavailable", never a 500
            raise _FetchError(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise _FetchError("JWKS document has no 'keys' list")
        return _parse_jwks(document["keys"])

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


class _FetchError(Exception):
    pass


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_jwks_url(url: str, variable: str) -> None:
    """``https://`` only; ``http://`` is allowed to a loopback host (development, tests)."""
    parsed = urllib.parse.urlsplit(url)
    host = (parsed.hostname or "").lower()
    if parsed.scheme == "https" and host:
        return
    if parsed.scheme == "http" and (host in _LOOPBACK_HOSTS or _is_loopback_ip(host)):
        return
    raise ConfigError(variable, "a JWKS URL must be https:// (http:// only to localhost, for development)")


def _parse_jwks(entries: list[Any]) -> dict[str, _Jwk]:
    """Usable signature keys by kid. Bad, symmetric or encryption keys are skipped."""
    keys: dict[str, _Jwk] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        declared = entry.get("alg")
        if declared is not None and (not isinstance(declared, str) or declared in _HMAC_ALGORITHMS):
            continue
        try:
            parsed = jwt.PyJWK(entry)
        except Exception:  # any malformed key is skipped; the others stay usable
            log.warning("JWKS key skipped: cannot be parsed", extra={"kid": kid})
            continue
        if isinstance(parsed.key, _PublicKey):
            keys[kid] = _Jwk(key=parsed.key, alg=declared)
    return keys


# --------------------------------------------------------------------------- verifier


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
        self._public_key = _load_pem(public_key) if public_key else None
        sources: dict[str | None, str] = {}
        if jwks_url:
            _check_jwks_url(jwks_url, "STREAMER_JWKS_URL")
            sources[issuer] = jwks_url
        for iss, url in (jwks_urls or {}).items():
            _check_jwks_url(url, "STREAMER_JWKS_URLS")
            sources[iss] = url
        if self._secret is None and self._public_key is None and not sources:
            raise ConfigError(
                "STREAMER_JWT_SECRET",
                "no token key configured: set STREAMER_JWT_SECRET (development), "
                "STREAMER_JWT_PUBLIC_KEY or STREAMER_JWKS_URL",
            )
        asymmetric = self._public_key is not None or bool(sources)

        if algorithms is None:
            algs = (_DEFAULT_HMAC if self._secret is not None else ()) + (
                _DEFAULT_ASYMMETRIC if asymmetric else ()
            )
        else:
            algs = tuple(a.strip() for a in algorithms if a.strip())
        supported = set(jwt.algorithms.get_default_algorithms()) - {"none"}
        for alg in algs:
            if alg.lower() == "none":
                raise ConfigError("STREAMER_JWT_ALGORITHMS", "'none' can never be allowed")
            if alg not in supported:
                raise ConfigError("STREAMER_JWT_ALGORITHMS", f"unsupported algorithm {alg!r}")
            if alg in _HMAC_ALGORITHMS and self._secret is None:
                raise ConfigError("STREAMER_JWT_ALGORITHMS", f"{alg} needs STREAMER_JWT_SECRET")
            if alg not in _HMAC_ALGORITHMS and not asymmetric:
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

        self._issuers = frozenset(i for i in [issuer, *(jwks_urls or {})] if i is not None)
        self._issuer_tenants: dict[str, frozenset[str]] | None = (
            {iss: frozenset(tenants) for iss, tenants in issuer_tenants.items()} if issuer_tenants else None
        )
        several = len(self._issuers) > 1 or (None in sources and len(sources) > 1)
        if several and self._issuer_tenants is None:
            raise ConfigError(
                "STREAMER_JWT_ISSUER_TENANTS",
                "several issuers are configured: bind each to the tenants it may mint "
                '(e.g. {"https://idp-a.example": ["acme"], "https://idp-b.example": ["globex"]})',
            )
        if self._issuer_tenants is not None and self._issuers:
            unknown = sorted(set(self._issuer_tenants) - self._issuers)
            if unknown:
                raise ConfigError("STREAMER_JWT_ISSUER_TENANTS", f"issuers not configured: {unknown}")
        self._audience = audience
        if audience is None:
            log.warning(
                "STREAMER_JWT_AUDIENCE is not set: tokens minted for any other service by the "
                "same issuer are accepted; set it in production"
            )
        self._require_exp = require_exp
        self._leeway = float(leeway)
        self._allowed_tenants = frozenset(allowed_tenants)
        self._jwks = (
            _JwksCache(
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
        return self._identity(claims)

    async def _key_for(self, token: str, header: Mapping[str, Any], alg: str) -> Any:
        if alg in _HMAC_ALGORITHMS:
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
            if not _key_fits(alg, entry.key, entry.alg):
                raise AuthError("algorithm_not_allowed", f"the key {kid[:64]!r} cannot verify {alg}")
            return entry.key
        if not _key_fits(alg, self._public_key):
            raise AuthError("algorithm_not_allowed", f"the configured public key cannot verify {alg}")
        return self._public_key

    def _identity(self, claims: dict[str, Any]) -> Identity:
        now = time.time()
        if self._issuers:
            iss = claims.get("iss")
            if iss is None:
                raise AuthError("missing_claim", "token has no iss claim")
            if not isinstance(iss, str) or iss not in self._issuers:
                raise AuthError("wrong_issuer", "token issuer is not accepted")
        if self._audience is not None:
            aud = claims.get("aud")
            if aud is None:
                raise AuthError("missing_claim", "token has no aud claim")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if self._audience not in [a for a in audiences if isinstance(a, str)]:
                raise AuthError("wrong_audience", "token audience does not include this service")

        exp = claims.get("exp")
        if exp is None:
            if self._require_exp:
                raise AuthError("missing_claim", "token has no exp claim")
        elif not _is_number(exp):
            raise AuthError("invalid_claim", "exp must be a number (seconds since the epoch)")
        elif exp <= now - self._leeway:
            raise AuthError("expired", "token has expired")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if not _is_number(value):
                raise AuthError("invalid_claim", f"{name} must be a number (seconds since the epoch)")
            if value > now + self._leeway:
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

        if self._allowed_tenants and identity["tenant_id"] not in self._allowed_tenants:
            raise AuthError("tenant_not_allowed", "tenant is not allowed to connect", status=403)
        if self._issuer_tenants is not None:
            iss = claims.get("iss")
            minted = self._issuer_tenants.get(iss) if isinstance(iss, str) else None
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

    async def close(self) -> None:
        """Close the JWKS HTTP session, if one was opened. Cached keys stay usable."""
        if self._jwks is not None:
            await self._jwks.close()
