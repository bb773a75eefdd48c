"""streamer.auth against a real JWKS endpoint: an aiohttp server on 127.0.0.1, port 0.

The server counts the fetches of each JWKS document, which is how these tests prove the
cache, the refetch throttle and the single shared fetch. Time is a fake monotonic clock
handed to the verifier, so nothing here waits for a cache to expire.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwtlib import public_pem

from streamer.auth import AuthError, TokenVerifier
from streamer.config import ConfigError

ISS_A = "https://a.idp.example"
ISS_B = "https://b.idp.example"

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_A = ec.generate_private_key(ec.SECP256R1())

OCT_SECRET = b"published-symmetric-key-that-must-never-be-used"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | str | bytes


def jwk(key: PrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    assert not isinstance(key, str | bytes)
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "use": "sig", **extra}


def sign(key: PrivateKey, *, kid: str | None, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "user-1", "tenant_id": "acme", "iat": now, "exp": now + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """Serves ``/{name}/jwks.json`` from ``docs[name]``; ``mode[name]`` makes it misbehave."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self.mode: dict[str, str] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.release = asyncio.Event()
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        mode = self.mode.get(name, "ok")
        if mode == "error":
            return web.Response(status=500, text="boom")
        if mode == "badjson":
            return web.Response(text="{not json", content_type="application/json")
        if mode == "nokeys":
            return web.json_response({"keys": "nope"})
        if mode == "slow":
            await self.release.wait()
        return web.json_response(self.docs.get(name, {"keys": []}))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/jwks.json"


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    srv = JwksServer()
    app = web.Application()
    app.router.add_get("/{name}/jwks.json", srv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = runner.addresses[0][1]
    yield srv
    srv.release.set()
    await runner.cleanup()


@pytest.fixture
async def verifiers() -> AsyncIterator[Callable[..., TokenVerifier]]:
    made: list[TokenVerifier] = []

    def make(**kw: Any) -> TokenVerifier:
        verifier = TokenVerifier(**kw)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.close()


async def reason_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    return info.value.reason


# --------------------------------------------------------------------------- the happy path and the cache


async def test_rs256_and_es256_from_jwks_fetched_once(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "r1"), jwk(EC_A, "e1")]}
    verifier = verifiers(jwks_url=server.url("a"), clock=Clock())
    for _ in range(5):
        assert (await verifier.verify(sign(RSA_A, kid="r1"))).user_id == "user-1"
        assert (await verifier.verify(sign(EC_A, kid="e1", alg="ES256"))).tenant_id == "acme"
    assert server.hits["a"] == 1


async def test_concurrent_misses_share_one_fetch(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "r1")]}
    verifier = verifiers(jwks_url=server.url("a"), clock=Clock())
    token = sign(RSA_A, kid="r1")
    results = await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    assert len(results) == 20
    assert server.hits["a"] == 1


async def test_cache_expires_after_jwks_cache_seconds(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "r1")]}
    clock = Clock()
    verifier = verifiers(jwks_url=server.url("a"), jwks_cache_seconds=60, clock=clock)
    token = sign(RSA_A, kid="r1")
    await verifier.verify(token)
    clock.now += 59
    await verifier.verify(token)
    assert server.hits["a"] == 1
    # The provider drops r1; once the cache expires, r1 is gone here too.
    server.docs["a"] = {"keys": [jwk(RSA_B, "r2")]}
    clock.now += 2
    assert await reason_of(verifier, token) == "unknown_key"
    assert server.hits["a"] == 2
    assert await verifier.verify(sign(RSA_B, kid="r2"))
    assert server.hits["a"] == 2


# ------------------------------------------------------------- unknown kid and the refetch throttle


async def test_unknown_kid_refetch_at_most_once_per_10s(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "r1")]}
    clock = Clock()
    verifier = verifiers(jwks_url=server.url("a"), clock=clock)
    await verifier.verify(sign(RSA_A, kid="r1"))
    assert server.hits["a"] == 1

    rotated = sign(RSA_B, kid="r2")
    for _ in range(10):  # a burst of unknown kids right after a fetch: no refetch storm
        assert await reason_of(verifier, rotated) == "unknown_key"
    assert server.hits["a"] == 1

    clock.now += 10
    assert await reason_of(verifier, rotated) == "unknown_key"  # one refetch, still unknown
    assert await reason_of(verifier, rotated) == "unknown_key"
    assert server.hits["a"] == 2

    # The provider rotates the key in; after the throttle window the next miss finds it.
    server.docs["a"] = {"keys": [jwk(RSA_A, "r1"), jwk(RSA_B, "r2")]}
    clock.now += 5
    assert await reason_of(verifier, rotated) == "unknown_key"
    assert server.hits["a"] == 2
    clock.now += 5
    assert (await verifier.verify(rotated)).user_id == "user-1"
    assert server.hits["a"] == 3


async def test_unknown_kid_on_a_cold_cache_fetches_once(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "r1")]}
    verifier = verifiers(jwks_url=server.url("a"), clock=Clock())
    token = sign(RSA_B, kid="nope")
    reasons = await asyncio.gather(*(reason_of(verifier, token) for _ in range(10)))
    assert set(reasons) == {"unknown_key"}
    assert server.hits["a"] == 1


async def test_token_without_kid_is_unknown_key(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "r1")]}
    verifier = verifiers(jwks_url=server.url("a"), clock=Clock())
    assert await reason_of(verifier, sign(RSA_A, kid=None)) == "unknown_key"


# ------------------------------------------------------------- issuers: cache keyed by (issuer, kid)


async def test_two_issuers_with_the_same_kid(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "k1")]}
    server.docs["b"] = {"keys": [jwk(RSA_B, "k1")]}
    verifier = verifiers(
        jwks_urls={ISS_A: server.url("a"), ISS_B: server.url("b")},
        issuer_tenants={ISS_A: ["*"], ISS_B: ["*"]},
        clock=Clock(),
    )
    assert await verifier.verify(sign(RSA_A, kid="k1", iss=ISS_A))
    assert await verifier.verify(sign(RSA_B, kid="k1", iss=ISS_B))
    # Each issuer's k1 verifies only its own tokens.
    assert await reason_of(verifier, sign(RSA_B, kid="k1", iss=ISS_A)) == "bad_signature"
    assert await reason_of(verifier, sign(RSA_A, kid="k1", iss=ISS_B)) == "bad_signature"
    assert server.hits == {"a": 1, "b": 1}


async def test_kid_known_only_under_another_issuer(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "only-a")]}
    server.docs["b"] = {"keys": [jwk(RSA_B, "k1")]}
    verifier = verifiers(
        jwks_urls={ISS_A: server.url("a"), ISS_B: server.url("b")},
        issuer_tenants={ISS_A: ["*"], ISS_B: ["*"]},
        clock=Clock(),
    )
    assert await verifier.verify(sign(RSA_A, kid="only-a", iss=ISS_A))  # A's key is in the cache now
    assert await reason_of(verifier, sign(RSA_A, kid="only-a", iss=ISS_B)) == "unknown_key"
    assert server.hits == {"a": 1, "b": 1}


async def test_each_issuer_mints_only_its_own_tenants(server: JwksServer, verifiers: Any) -> None:
    """Issue #18 item 6: with several issuers, any issuer could mint any tenant."""
    server.docs["a"] = {"keys": [jwk(RSA_A, "ka")]}
    server.docs["b"] = {"keys": [jwk(RSA_B, "kb")]}
    urls = {ISS_A: server.url("a"), ISS_B: server.url("b")}
    with pytest.raises(ConfigError) as info:  # several issuers and no binding: refused at start
        verifiers(jwks_urls=urls, clock=Clock())
    assert info.value.variable == "STREAMER_JWT_ISSUER_TENANTS"
    verifier = verifiers(jwks_urls=urls, issuer_tenants={ISS_A: ["acme"], ISS_B: ["globex", "initech"]})
    assert (await verifier.verify(sign(RSA_A, kid="ka", iss=ISS_A))).tenant_id == "acme"
    assert (
        await verifier.verify(sign(RSA_B, kid="kb", iss=ISS_B, tenant_id="initech"))
    ).tenant_id == "initech"
    with pytest.raises(AuthError) as refused:  # B's genuine token for A's tenant
        await verifier.verify(sign(RSA_B, kid="kb", iss=ISS_B, tenant_id="acme"))
    assert (refused.value.reason, refused.value.status) == ("tenant_not_allowed", 403)
    assert (
        await reason_of(verifier, sign(RSA_A, kid="ka", iss=ISS_A, tenant_id="globex"))
        == "tenant_not_allowed"
    )


async def test_issuer_without_a_jwks_is_refused_before_any_fetch(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "k1")]}
    verifier = verifiers(jwks_url=server.url("a"), issuer=ISS_A, clock=Clock())
    assert await verifier.verify(sign(RSA_A, kid="k1", iss=ISS_A))
    assert await reason_of(verifier, sign(RSA_A, kid="k1", iss=ISS_B)) == "wrong_issuer"
    assert await reason_of(verifier, sign(RSA_A, kid="k1")) == "missing_claim"
    multi = verifiers(jwks_urls={ISS_A: server.url("a")}, clock=Clock())
    assert await reason_of(multi, sign(RSA_A, kid="k1", iss="https://c.example")) == "wrong_issuer"
    assert server.hits["a"] == 1


async def test_single_jwks_without_issuer_accepts_any_issuer(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "k1")]}
    verifier = verifiers(jwks_url=server.url("a"), clock=Clock())
    assert await verifier.verify(sign(RSA_A, kid="k1", iss=ISS_B))
    assert await verifier.verify(sign(RSA_A, kid="k1"))
    assert server.hits["a"] == 1


# --------------------------------------------------------------------------- fetch failures


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_server_down_is_jwks_unavailable(verifiers: Any) -> None:
    verifier = verifiers(jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", clock=Clock())
    assert await reason_of(verifier, sign(RSA_A, kid="k1")) == "jwks_unavailable"


@pytest.mark.parametrize("mode", ["error", "badjson", "nokeys"])
async def test_bad_answer_is_jwks_unavailable_and_not_retried_at_once(
    server: JwksServer, verifiers: Any, mode: str
) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "k1")]}
    server.mode["a"] = mode
    clock = Clock()
    verifier = verifiers(jwks_url=server.url("a"), clock=clock)
    token = sign(RSA_A, kid="k1")
    assert await reason_of(verifier, token) == "jwks_unavailable"
    assert await reason_of(verifier, token) == "jwks_unavailable"
    assert server.hits["a"] == 1
    server.mode["a"] = "ok"
    clock.now += 10
    assert await verifier.verify(token)
    assert server.hits["a"] == 2


async def test_slow_server_times_out_as_jwks_unavailable(server: JwksServer, verifiers: Any) -> None:
    server.mode["a"] = "slow"
    verifier = verifiers(jwks_url=server.url("a"), jwks_timeout=0.2, clock=Clock())
    assert await reason_of(verifier, sign(RSA_A, kid="k1")) == "jwks_unavailable"


async def test_expired_keys_are_not_used_while_the_jwks_is_down(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "k1")]}
    clock = Clock()
    verifier = verifiers(jwks_url=server.url("a"), jwks_cache_seconds=60, clock=clock)
    token = sign(RSA_A, kid="k1")
    await verifier.verify(token)
    server.mode["a"] = "error"
    clock.now += 61
    assert await reason_of(verifier, token) == "jwks_unavailable"


# --------------------------------------------------------------------------- algorithms and key shapes


async def test_hs256_signed_with_the_jwks_public_key_is_refused(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "k1")]}
    verifier = verifiers(jwks_url=server.url("a"), clock=Clock())
    pem = RSA_A.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    payload = {"sub": "u", "tenant_id": "acme", "exp": now + 600}
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "kid": "k1"}).encode()).decode()
    body = jwt.utils.base64url_encode(json.dumps(payload).encode()).decode()
    sig = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{jwt.utils.base64url_encode(sig).decode()}"
    assert await reason_of(verifier, token) == "algorithm_not_allowed"
    assert server.hits["a"] == 0  # refused before any key is looked up


async def test_key_that_cannot_do_the_token_algorithm(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "rsa"), jwk(RSA_B, "rs256-only", alg="RS256")]}
    verifier = verifiers(jwks_url=server.url("a"), algorithms=["RS256", "RS384", "ES256"], clock=Clock())
    assert await reason_of(verifier, sign(EC_A, kid="rsa", alg="ES256")) == "algorithm_not_allowed"
    assert await reason_of(verifier, sign(RSA_B, kid="rs256-only", alg="RS384")) == "algorithm_not_allowed"
    assert await verifier.verify(sign(RSA_B, kid="rs256-only", alg="RS256"))


async def test_symmetric_and_broken_keys_in_the_jwks_are_ignored(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {
        "keys": [
            {"kty": "oct", "kid": "sym", "k": jwt.utils.base64url_encode(OCT_SECRET).decode()},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            jwk(RSA_B, "enc", use="enc"),
            "not a key",
            jwk(RSA_A, "good"),
        ]
    }
    verifier = verifiers(jwks_url=server.url("a"), clock=Clock())
    assert await verifier.verify(sign(RSA_A, kid="good"))
    assert await reason_of(verifier, sign(RSA_A, kid="sym")) == "unknown_key"
    assert await reason_of(verifier, sign(RSA_A, kid="broken")) == "unknown_key"
    assert await reason_of(verifier, sign(RSA_B, kid="enc")) == "unknown_key"
    # Even with HS256 allowed, an HMAC token is checked with the configured secret only,
    # never with an "oct" key someone published in the JWKS.
    secret = "configured-secret-long-enough-for-hs256-0123456789"
    both = verifiers(secret=secret, jwks_url=server.url("a"), clock=Clock())
    forged = sign(OCT_SECRET, kid="sym", alg="HS256")
    assert await reason_of(both, forged) == "bad_signature"
    assert await both.verify(sign(secret, kid="sym", alg="HS256"))


async def test_pem_and_jwks_together(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "k1")]}
    verifier = verifiers(public_key=public_pem(RSA_B), jwks_url=server.url("a"), clock=Clock())
    assert await verifier.verify(sign(RSA_B, kid=None))  # no kid: the PEM key
    assert server.hits["a"] == 0
    assert await verifier.verify(sign(RSA_A, kid="k1"))  # a kid: the JWKS
    assert await reason_of(verifier, sign(RSA_B, kid="k1")) == "bad_signature"


async def test_close_keeps_cached_keys_and_stops_fetching(server: JwksServer, verifiers: Any) -> None:
    server.docs["a"] = {"keys": [jwk(RSA_A, "k1")]}
    clock = Clock()
    verifier = verifiers(jwks_url=server.url("a"), clock=clock)
    await verifier.verify(sign(RSA_A, kid="k1"))
    await verifier.close()
    assert await verifier.verify(sign(RSA_A, kid="k1"))
    clock.now += 10
    assert await reason_of(verifier, sign(RSA_A, kid="other")) == "jwks_unavailable"
    assert server.hits["a"] == 1
