"""JWKS fetching and caching, keyed by ``(issuer, kid)``.

The token's ``iss`` (read unverified, only to pick the key source, and verified afterwards)
selects the JWKS it may be checked against, so a key published by one issuer never verifies
another issuer's token. Symmetric (``oct``) keys in a JWKS are ignored. An unknown ``kid``
refetches at most once per ``refetch_seconds``, a failed fetch is not retried more often
either, and concurrent misses share one fetch, so a burst of bad tokens cannot become a
fetch storm against the identity provider. Expired keys are not used while the provider is
unreachable: the answer is then ``jwks_unavailable`` (HTTP 401).

JWKS URLs must be ``https://`` (``http://`` only to a loopback address, for development and
tests): keys fetched in clear could be replaced on the way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import jwt

from streamer.auth.errors import AuthError
from streamer.auth.keys import HMAC_ALGORITHMS, PublicKey
from streamer.config import ConfigError
from streamer.metrics import counter

__all__ = ["Jwk", "JwksCache", "check_jwks_url", "parse_jwks"]

log = logging.getLogger(__name__)

_MAX_JWKS_BYTES = 1024 * 1024
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

_jwks_fetches = counter(
    "streamer_jwks_fetches_total", "JWKS documents fetched, by result (ok, error).", ["result"]
)


@dataclasses.dataclass(frozen=True)
class Jwk:
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


class JwksCache:
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
        self._keys: dict[tuple[str | None, str], Jwk] = {}
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

    async def key(self, issuer: str | None, kid: str) -> Jwk:
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

    async def _fetch(self, url: str) -> dict[str, Jwk]:
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
        return parse_jwks(document["keys"])

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


def check_jwks_url(url: str, variable: str) -> None:
    """``https://`` only; ``http://`` is allowed to a loopback host (development, tests)."""
    parsed = urllib.parse.urlsplit(url)
    host = (parsed.hostname or "").lower()
    if parsed.scheme == "https" and host:
        return
    if parsed.scheme == "http" and (host in _LOOPBACK_HOSTS or _is_loopback_ip(host)):
        return
    raise ConfigError(variable, "a JWKS URL must be https:// (http:// only to localhost, for development)")


def parse_jwks(entries: list[Any]) -> dict[str, Jwk]:
    """Usable signature keys by kid. Bad, symmetric or encryption keys are skipped."""
    keys: dict[str, Jwk] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        declared = entry.get("alg")
        if declared is not None and (not isinstance(declared, str) or declared in HMAC_ALGORITHMS):
            continue
        try:
            parsed = jwt.PyJWK(entry)
        except Exception:  # any malformed key is skipped; the others stay usable
            log.warning("JWKS key skipped: cannot be parsed", extra={"kid": kid})
            continue
        if isinstance(parsed.key, PublicKey):
            keys[kid] = Jwk(key=parsed.key, alg=declared)
    return keys
