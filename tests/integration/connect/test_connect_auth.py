"""The authenticated upgrade: every refusal reason is an HTTP 401/403 with a JSON body,
counted by reason, and leaves no connection record; every token source works.

One service is configured with an HS256 secret *and* a JWKS URL (an aiohttp server on
127.0.0.1 serving one RSA key), an issuer, an audience and an allowed tenant, so one
instance can produce every reason but ``jwks_unavailable`` (a second one, whose JWKS
URL answers nothing).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from connect_helpers import SECRET, StartConnect, sample
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwtlib import assembled

from services.connect.service import ConnectService
from streamer import protocol
from streamer.auth import make_token
from streamer.local.ports import free_port
from streamer.store import Store

ISS = "https://idp.example"
AUD = "streamer"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def jwks_url() -> AsyncIterator[str]:
    jwk = {**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": "k1", "use": "sig"}

    async def handle(_: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/jwks.json", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/jwks.json"
    await runner.cleanup()


@pytest.fixture
async def guarded(start_connect: StartConnect, jwks_url: str, tenant: str) -> ConnectService:
    return await start_connect(
        jwks_url=jwks_url, jwt_issuer=ISS, jwt_audience=AUD, allowed_tenants=(tenant, "other-allowed")
    )


def claims(tenant: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    out = {"sub": "mallory", "tenant_id": tenant, "iss": ISS, "aud": AUD, "iat": now, "exp": now + 600}
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def hs(tenant: str, *, secret: str = SECRET, alg: str = "HS256", **extra: Any) -> str:
    return jwt.encode(claims(tenant, **extra), secret, algorithm=alg)


def rs(tenant: str, *, kid: str = "k1", **extra: Any) -> str:
    return jwt.encode(claims(tenant, **extra), RSA_KEY, algorithm="RS256", headers={"kid": kid})


def unsigned(tenant: str) -> str:
    return assembled({"alg": "none", "typ": "JWT"}, claims(tenant))


# reason -> (token maker, where the token goes)
CASES: dict[str, tuple[Callable[[str], str | None], str]] = {
    "missing_token": (lambda t: None, "header"),
    "malformed_token": (lambda t: "not-a-jwt", "query_token"),
    "alg_none": (unsigned, "header"),
    "algorithm_not_allowed": (lambda t: hs(t, alg="HS512", secret="s" * 64), "query_authorization"),
    "bad_signature": (lambda t: hs(t, secret="another-secret-that-is-also-long-enough-000"), "subprotocol"),
    "expired": (lambda t: hs(t, exp=int(time.time()) - 3600), "header"),
    "not_yet_valid": (lambda t: hs(t, nbf=int(time.time()) + 3600), "query_token"),
    "wrong_issuer": (lambda t: hs(t, iss="https://evil.example"), "subprotocol"),
    "wrong_audience": (lambda t: hs(t, aud="someone-else"), "header"),
    "missing_claim": (lambda t: hs(t, tenant_id=None), "query_token"),
    "invalid_claim": (lambda t: hs(t, permissions="admin"), "subprotocol"),
    "unknown_key": (lambda t: rs(t, kid="nope"), "header"),
    "tenant_not_allowed": (lambda t: hs("not-allowed"), "subprotocol"),
}


def upgrade_request(token: str | None, source: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query) of a WebSocket upgrade carrying ``token`` in ``source``."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    query: dict[str, str] = {}
    if token is not None:
        if source == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif source == "query_authorization":
            query["Authorization"] = f"Bearer {token}"
        elif source == "query_token":
            query["token"] = token
        elif source == "subprotocol":
            headers["Sec-WebSocket-Protocol"] = f"bearer, {token}"
    return headers, query


@pytest.mark.parametrize("reason", sorted(CASES))
async def test_each_refusal_reason(
    reason: str, guarded: ConnectService, tenant: str, store: Store, http: aiohttp.ClientSession
) -> None:
    make, source = CASES[reason]
    headers, query = upgrade_request(make(tenant), source)
    before = sample("streamer_connect_auth_failures_total", reason=reason)
    async with http.get(f"http://127.0.0.1:{guarded.ws_port}/ws", headers=headers, params=query) as resp:
        body = await resp.json()
        expected = 403 if reason == "tenant_not_allowed" else 401
        assert resp.status == expected, body
        assert body["code"] == ("FORBIDDEN" if expected == 403 else "UNAUTHORIZED")
        assert body["reason"] == reason
        assert isinstance(body["error"], str) and body["error"]
        if expected == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        # Never a 101, and the token never comes back.
        assert "Sec-WebSocket-Accept" not in resp.headers
        assert (make(tenant) or "\0") not in json.dumps(body)
    assert sample("streamer_connect_auth_failures_total", reason=reason) == before + 1
    assert await store.connections.by_tenant(tenant) == []
    assert guarded.connections == {}


async def test_jwks_unavailable(
    start_connect: StartConnect, tenant: str, http: aiohttp.ClientSession
) -> None:
    service = await start_connect(jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")
    before = sample("streamer_connect_auth_failures_total", reason="jwks_unavailable")
    headers, query = upgrade_request(
        jwt.encode(claims(tenant), RSA_KEY, "RS256", headers={"kid": "k1"}), "header"
    )
    async with http.get(f"http://127.0.0.1:{service.ws_port}/ws", headers=headers, params=query) as resp:
        assert resp.status == 401
        body = await resp.json()
        assert (body["code"], body["reason"]) == ("UNAUTHORIZED", "jwks_unavailable")
    assert sample("streamer_connect_auth_failures_total", reason="jwks_unavailable") == before + 1


@pytest.mark.parametrize("source", ["header", "query_authorization", "query_token", "subprotocol"])
async def test_every_token_source_connects(
    source: str, guarded: ConnectService, tenant: str, store: Store, http: aiohttp.ClientSession
) -> None:
    token = hs(tenant, permissions=["a", "b"])
    headers, query = upgrade_request(token, source)
    kwargs: dict[str, Any] = {"params": query}
    if source == "subprotocol":
        kwargs["protocols"] = ("bearer", token)
    elif source == "header":
        kwargs["headers"] = {"Authorization": headers["Authorization"]}
    ws = await http.ws_connect(f"http://127.0.0.1:{guarded.ws_port}/ws", **kwargs)
    if source == "subprotocol":
        assert ws.protocol == "bearer"  # the server selected the protocol offered next to the token
    [record] = await store.connections.by_tenant(tenant)
    assert record.user_id == "mallory"
    assert record.metadata["permissions"] == ["a", "b"]
    await ws.send_json({"action": "$ping"})
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
    await ws.close()


async def test_rs256_token_from_jwks_connects(
    guarded: ConnectService, tenant: str, http: aiohttp.ClientSession
) -> None:
    ws = await http.ws_connect(
        f"http://127.0.0.1:{guarded.ws_port}/ws", headers={"Authorization": f"Bearer {rs(tenant)}"}
    )
    await ws.send_json({"action": "$ping"})
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
    await ws.close()


@pytest.mark.parametrize("offered", ["alone", "first", "last"])
async def test_a_token_in_the_subprotocol_is_never_echoed(
    offered: str, connect: ConnectService, tenant: str, http: aiohttp.ClientSession
) -> None:
    """Issue #18 item 6: a token offered alone came back in the response's Sec-WebSocket-Protocol."""
    token = make_token(secret=SECRET, user="u", tenant=tenant)
    protocols = {"alone": (token,), "first": (token, "streamer.v1"), "last": ("bearer", token)}[offered]
    ws = await http.ws_connect(f"http://127.0.0.1:{connect.ws_port}/ws", protocols=protocols)
    try:
        answered = ws._response.headers.get("Sec-WebSocket-Protocol")  # the raw 101 response
        assert answered == {"alone": None, "first": "streamer.v1", "last": "bearer"}[offered]
        assert ws.protocol == answered
        assert not any(token in value for value in ws._response.headers.values())
        await ws.send_json({"action": "$ping"})
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
    finally:
        await ws.close()


async def test_known_subprotocol_is_selected_when_the_token_is_elsewhere(
    connect: ConnectService, tenant: str, http: aiohttp.ClientSession
) -> None:
    token = make_token(secret=SECRET, user="u", tenant=tenant)
    ws = await http.ws_connect(
        f"http://127.0.0.1:{connect.ws_port}/ws", params={"token": token}, protocols=("streamer.v1",)
    )
    assert ws.protocol == "streamer.v1"
    await ws.close()


async def test_plain_http_get_with_a_token_is_a_400(
    connect: ConnectService, tenant: str, http: aiohttp.ClientSession
) -> None:
    token = make_token(secret=SECRET, user="u", tenant=tenant)
    async with http.get(f"http://127.0.0.1:{connect.ws_port}/ws", params={"token": token}) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == protocol.VALIDATION_ERROR
