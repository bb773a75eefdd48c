"""The JWT attack matrix, end to end against the connect service's WebSocket upgrade.

Every forged, expired, misdirected or malformed token must be refused *before* the
upgrade: HTTP 401 (never 101), a JSON body ``{"code": "UNAUTHORIZED", "reason": ...}``
whose reason is the documented one, and neither the body nor any log line may contain
the token. A valid token of the same shape is accepted, so each refusal is about the
attack and not about the set-up.

Gateways (each the real ``ConnectService``, configured through ``Settings`` the way a
deployment configures it unless noted):

- ``rs``: RS256 with a PEM public key, ``iss`` and ``aud`` required;
- ``mixed``: an HS256 secret *and* the RS256 public key (the set-up where HS/RS
  confusion would bite if the key were chosen by the token's header);
- ``jwks``: two issuers, each with its own JWKS URL (verifier built directly: settings
  carry one JWKS URL; the two-issuer cache is the verifier's own feature).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from seclib import (
    AUDIENCE,
    EC_KEY,
    ISSUER,
    OTHER_RSA_KEY,
    RSA_PEM,
    SECRET,
    Gateway,
    gateway,
    good_claims,
    hs256_with,
    rs256,
    tamper_claims,
    tamper_signature,
    unsigned,
    upgrade_status,
)

from streamer.auth import TokenVerifier, make_token
from streamer.config import Settings

NOW = int(time.time())


def _rs_matrix() -> list[tuple[str, str, str]]:
    """(name, token, expected reason) against the ``rs`` gateway."""
    good = rs256(good_claims())
    return [
        ("alg none", unsigned({"alg": "none", "typ": "JWT"}, good_claims()), "alg_none"),
        ("alg None", unsigned({"alg": "None"}, good_claims()), "alg_none"),
        ("alg NONE with a signature", unsigned({"alg": "NONE"}, good_claims(), b"sig"), "alg_none"),
        ("alg missing", unsigned({"typ": "JWT"}, good_claims()), "malformed_token"),
        (
            "HS256 signed with the public PEM",
            hs256_with(RSA_PEM.encode(), good_claims()),
            "algorithm_not_allowed",
        ),
        ("HS512 header", unsigned({"alg": "HS512"}, good_claims(), b"x" * 64), "algorithm_not_allowed"),
        (
            "ES256 by another key",
            jwt.encode(good_claims(), EC_KEY, algorithm="ES256"),
            "algorithm_not_allowed",
        ),
        ("expired", rs256(good_claims(exp=NOW - 3600)), "expired"),
        ("expired beyond leeway", rs256(good_claims(exp=NOW - 31)), "expired"),
        ("nbf in the future", rs256(good_claims(nbf=NOW + 3600)), "not_yet_valid"),
        ("iat in the future", rs256(good_claims(iat=NOW + 3600)), "not_yet_valid"),
        ("wrong iss", rs256(good_claims(iss="https://evil.example")), "wrong_issuer"),
        ("iss missing", rs256(good_claims(iss=None)), "missing_claim"),
        ("wrong aud", rs256(good_claims(aud="another-service")), "wrong_audience"),
        ("aud list without ours", rs256(good_claims(aud=["a", "b"])), "wrong_audience"),
        ("aud missing", rs256(good_claims(aud=None)), "missing_claim"),
        ("sub missing", rs256(good_claims(sub=None)), "missing_claim"),
        ("tenant_id missing", rs256(good_claims(tenant_id=None)), "missing_claim"),
        ("exp missing", rs256(good_claims(exp=None)), "missing_claim"),
        ("sub empty", rs256(good_claims(sub="  ")), "invalid_claim"),
        ("tenant_id not a string", rs256(good_claims(tenant_id=["acme"])), "invalid_claim"),
        ("exp not a number", rs256(good_claims(exp="tomorrow")), "invalid_claim"),
        ("permissions not a list", rs256(good_claims(permissions="admin")), "invalid_claim"),
        ("tampered signature", tamper_signature(good), "bad_signature"),
        ("tampered tenant", tamper_claims(good, tenant_id="tenant-b"), "bad_signature"),
        ("tampered permissions", tamper_claims(good, permissions=["admin"]), "bad_signature"),
        ("signature stripped", good.rsplit(".", 1)[0] + ".", "bad_signature"),
        ("signed by another RSA key", rs256(good_claims(), key=OTHER_RSA_KEY), "bad_signature"),
        (
            "jwk header carrying the attacker's key",
            rs256(
                good_claims(),
                key=OTHER_RSA_KEY,
                headers={"jwk": RSAAlgorithm.to_jwk(OTHER_RSA_KEY.public_key(), as_dict=True)},
            ),
            "bad_signature",
        ),
        ("not a JWT", "hello", "malformed_token"),
        ("three garbage parts", "a.b.c", "malformed_token"),
        ("header not JSON", "bm90anNvbg.e30.", "malformed_token"),
        ("long garbage token", "eyJ" + "A" * 7_000 + ".e30.x", "malformed_token"),
    ]


def _assert_refused(
    name: str, status: int, body: dict[str, Any] | None, raw: str, token: str, reason: str
) -> None:
    assert status == 401, f"{name}: HTTP {status} {raw[:200]}"
    assert body is not None, f"{name}: body is not JSON: {raw[:200]}"
    assert body.get("code") == "UNAUTHORIZED", f"{name}: {body}"
    assert body.get("reason") == reason, f"{name}: expected {reason}, got {body}"
    if token:
        assert token not in raw, f"{name}: the token is echoed in the answer"
        signature = token.rsplit(".", 1)[-1]
        if len(signature) > 16:
            assert signature not in raw, f"{name}: the signature is echoed in the answer"


def _assert_not_logged(caplog: pytest.LogCaptureFixture, tokens: list[str]) -> None:
    text = caplog.text + "".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    for token in tokens:
        parts = [p for p in token.split(".") if len(p) > 16]
        for part in parts:
            assert part not in text, f"a token part reached the logs: {part[:20]}..."


@pytest.fixture
async def rs_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings, jwt_public_key=RSA_PEM, jwt_issuer=ISSUER, jwt_audience=AUDIENCE) as gw:
        yield gw


async def test_rs256_gateway_refuses_every_attack(
    rs_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    matrix = _rs_matrix()
    async with aiohttp.ClientSession() as session:
        # The control: a valid token is upgraded (so the refusals below are about the attacks).
        good = rs256(good_claims())
        async with session.ws_connect(rs_gateway.ws_url, headers={"Authorization": f"Bearer {good}"}) as ws:
            await ws.send_str('{"action":"$ping"}')
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
        for name, token, reason in matrix:
            status, body, raw = await upgrade_status(
                session, rs_gateway.ws_url, headers={"Authorization": f"Bearer {token}"}
            )
            _assert_refused(name, status, body, raw, token, reason)
        # The other token sources verify the same way (a few attacks through each).
        picks = [
            m
            for m in matrix
            if m[0] in ("alg none", "tampered tenant", "expired", "HS256 signed with the public PEM")
        ]
        for name, token, reason in picks:
            for where, kwargs in (
                ("query token", {"params": {"token": token}}),
                ("query Authorization", {"params": {"Authorization": f"Bearer {token}"}}),
                ("subprotocol", {"headers": {"Sec-WebSocket-Protocol": f"streamer.v1, {token}"}}),
            ):
                status, body, raw = await upgrade_status(session, rs_gateway.ws_url, **kwargs)  # type: ignore[arg-type]
                _assert_refused(f"{name} via {where}", status, body, raw, token, reason)
        status, body, raw = await upgrade_status(session, rs_gateway.ws_url)
        _assert_refused("no token", status, body, raw, "", "missing_token")
        # Over aiohttp's 8 KiB header-line limit: refused by the HTTP parser (400), never upgraded.
        huge = "eyJ" + "A" * 17_000 + ".e30.x"
        status, _, _ = await upgrade_status(
            session, rs_gateway.ws_url, headers={"Authorization": f"Bearer {huge}"}
        )
        assert status in (400, 401, 431), status
    _assert_not_logged(caplog, [good] + [t for _, t, _ in matrix])


async def test_hs_rs_confusion_on_a_gateway_with_both_keys(settings: Settings) -> None:
    """With an HS256 secret and an RS256 key both configured, the public key as an HMAC
    secret still fails: HMAC tokens are only ever checked with the secret."""
    async with (
        gateway(settings, jwt_secret=SECRET, jwt_public_key=RSA_PEM) as gw,
        aiohttp.ClientSession() as session,
    ):
        for secret in (RSA_PEM.encode(), RSA_PEM.strip().encode(), RSA_PEM.replace("\n", "").encode()):
            token = hs256_with(secret, good_claims(iss=None, aud=None))
            status, body, raw = await upgrade_status(
                session, gw.ws_url, headers={"Authorization": f"Bearer {token}"}
            )
            _assert_refused("HS256 with the PEM as secret", status, body, raw, token, "bad_signature")
        # Both legitimate kinds are accepted.
        for token in (
            make_token(secret=SECRET, user="u", tenant="t"),
            rs256(good_claims(iss=None, aud=None)),
        ):
            status, _, raw = await upgrade_status(
                session, gw.ws_url, headers={"Authorization": f"Bearer {token}"}
            )
            assert status == 101, raw


async def test_refused_tenant_is_403(settings: Settings) -> None:
    async with gateway(settings, allowed_tenants=("tenant-a",)) as gw, aiohttp.ClientSession() as session:
        token = make_token(secret=SECRET, user="u", tenant="tenant-z")
        status, body, raw = await upgrade_status(
            session, gw.ws_url, headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 403 and body is not None, raw
        assert body["code"] == "FORBIDDEN" and body["reason"] == "tenant_not_allowed"
        ok = make_token(secret=SECRET, user="u", tenant="tenant-a")
        assert (await upgrade_status(session, gw.ws_url, headers={"Authorization": f"Bearer {ok}"}))[0] == 101


# --------------------------------------------------------------------------- JWKS


ISS_A = "https://a.idp.test"
ISS_B = "https://b.idp.test"
KEY_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_EVIL = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig", "alg": "RS256"}


@contextlib.asynccontextmanager
async def jwks_server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    hits: dict[str, int] = {}
    documents = {
        "a": {"keys": [_jwk(KEY_A, "a-key")]},
        "b": {"keys": [_jwk(KEY_B, "b-key"), _jwk(KEY_B, "shared-kid")]},
        "evil": {"keys": [_jwk(KEY_EVIL, "a-key"), _jwk(KEY_EVIL, "evil-key")]},
    }

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits[name] = hits.get(name, 0) + 1
        return web.json_response(documents[name])

    app = web.Application()
    app.router.add_get("/{name}.json", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


def _signed(key: rsa.RSAPrivateKey, kid: str | None, **claims: Any) -> str:
    payload = {"sub": "alice", "tenant_id": "tenant-a", "iat": NOW, "exp": NOW + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm="RS256", headers=headers)


async def test_jwks_kid_from_another_issuer_is_refused(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with jwks_server() as (base, hits):
        verifier = TokenVerifier(
            jwks_urls={ISS_A: f"{base}/a.json", ISS_B: f"{base}/b.json"},
            issuer_tenants={ISS_A: ["*"], ISS_B: ["*"]},
        )
        cases: list[tuple[str, str, str]] = [
            # Issuer B's key (a real key of a real issuer) presented as issuer A's token.
            ("kid of issuer B on an issuer A token", _signed(KEY_B, "b-key", iss=ISS_A), "unknown_key"),
            ("issuer A's kid, signed by issuer B's key", _signed(KEY_B, "a-key", iss=ISS_A), "bad_signature"),
            (
                "kid both publish, token of A signed by B",
                _signed(KEY_B, "shared-kid", iss=ISS_A),
                "unknown_key",
            ),
            ("unknown issuer", _signed(KEY_EVIL, "evil-key", iss="https://evil.test"), "wrong_issuer"),
            ("no iss", _signed(KEY_A, "a-key"), "missing_claim"),
            ("no kid", _signed(KEY_A, None, iss=ISS_A), "unknown_key"),
            ("kid path traversal", _signed(KEY_EVIL, "../../b.json#b-key", iss=ISS_A), "unknown_key"),
        ]
        # jku / x5u pointing at the attacker's JWKS: never fetched, never trusted.
        evil_headers = {"kid": "evil-key", "jku": f"{base}/evil.json", "x5u": f"{base}/evil.json"}
        cases.append(
            (
                "jku/x5u to the attacker's JWKS",
                jwt.encode(
                    {"sub": "alice", "tenant_id": "tenant-a", "iss": ISS_A, "exp": NOW + 600},
                    KEY_EVIL,
                    algorithm="RS256",
                    headers=evil_headers,
                ),
                "unknown_key",
            )
        )
        async with gateway(settings, verifier=verifier) as gw, aiohttp.ClientSession() as session:
            for name, token, reason in cases:
                status, body, raw = await upgrade_status(
                    session, gw.ws_url, headers={"Authorization": f"Bearer {token}"}
                )
                _assert_refused(name, status, body, raw, token, reason)
            for token in (_signed(KEY_A, "a-key", iss=ISS_A), _signed(KEY_B, "b-key", iss=ISS_B)):
                status, _, raw = await upgrade_status(
                    session, gw.ws_url, headers={"Authorization": f"Bearer {token}"}
                )
                assert status == 101, raw
        assert hits.get("evil", 0) == 0, "the verifier fetched a JWKS named by the token"
        # Bursts of unknown kids do not become a fetch storm against the identity providers.
        assert hits.get("a", 0) <= 3 and hits.get("b", 0) <= 3, hits
    _assert_not_logged(caplog, [t for _, t, _ in cases])


async def test_socket_does_not_outlive_its_token(settings: Settings) -> None:
    """At ``exp`` (plus the leeway) connect closes the socket with 4002 "token expired".

    The client SDK then reconnects with a fresh token from its token provider.
    """
    async with gateway(settings, jwt_leeway_seconds=0.0) as gw, aiohttp.ClientSession() as session:
        token = make_token(secret=SECRET, user="u", tenant="t", ttl=2)
        async with session.ws_connect(gw.ws_url, headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send_str('{"action":"$ping"}')
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
            msg = await ws.receive(timeout=10)  # nothing is sent: the next thing is the close
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 4002
