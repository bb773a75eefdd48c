"""streamer.auth without the network: token sources, signatures, algorithms and claims.

JWKS over HTTP is in tests/integration/test_jwks.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict, MultiDict

from streamer.auth import (
    REASONS,
    AuthError,
    Identity,
    TokenSource,
    TokenVerifier,
    extract_token,
    make_token,
)
from streamer.config import ConfigError, load_settings

# 64 bytes: long enough for HS512 too, so PyJWT does not warn about key length.
SECRET = "unit-test-secret-long-enough-for-every-hmac-algorithm-0123456789"
OTHER_SECRET = "another-secret-long-enough-for-every-hmac-algorithm-0123456789ab"

# One key of each kind for the whole module: RSA generation is the slow part.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_PEM = public_pem(RSA_KEY)
EC_PEM = public_pem(EC_KEY)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, for shapes PyJWT refuses to produce."""
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)])


def hmac_token(secret: bytes, header: Mapping[str, Any], payload: Any) -> str:
    """An HMAC-SHA256 token signed by hand, with any header, payload and secret bytes."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


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
        if value is _DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


_DROP = object()


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


# --------------------------------------------------------------------------- AuthError


def test_auth_error_carries_reason_status_and_message() -> None:
    err = AuthError("expired", "token has expired")
    assert (err.reason, err.status, str(err)) == ("expired", 401, "token has expired")
    assert AuthError("tenant_not_allowed", "no", status=403).status == 403
    with pytest.raises(ValueError):
        AuthError("something_else", "x")


def test_reasons_are_distinct() -> None:
    assert len(set(REASONS)) == len(REASONS) == 14


# --------------------------------------------------------------------------- token sources

JWT_LIKE = make_token(secret=SECRET, user="u", tenant="t")


def test_header_bearer_name_and_scheme_case_insensitive() -> None:
    got = extract_token(headers={"authorization": "bEaReR  abc.def.ghi "}, query={})
    assert got == TokenSource(token="abc.def.ghi", source="header", subprotocol=None)
    got = extract_token(headers=CIMultiDict({"AUTHORIZATION": "Bearer tok"}), query={})
    assert got.token == "tok" and got.source == "header"


def test_header_wins_over_query_and_subprotocol() -> None:
    got = extract_token(
        headers={"Authorization": "Bearer from-header", "Sec-WebSocket-Protocol": f"bearer, {JWT_LIKE}"},
        query={"Authorization": "Bearer from-query", "token": "from-token"},
    )
    assert got.source == "header" and got.token == "from-header"


def test_query_authorization_with_bearer_or_bare_token() -> None:
    got = extract_token(headers={}, query={"Authorization": "Bearer q1"})
    assert got == TokenSource(token="q1", source="query_authorization", subprotocol=None)
    got = extract_token(headers={}, query=MultiDict({"Authorization": "q2"}))
    assert got == TokenSource(token="q2", source="query_authorization", subprotocol=None)


def test_query_authorization_wins_over_query_token() -> None:
    got = extract_token(headers={}, query={"token": "t1", "Authorization": "a1"})
    assert got.source == "query_authorization" and got.token == "a1"


def test_query_token() -> None:
    got = extract_token(headers={}, query={"token": "t1"})
    assert got == TokenSource(token="t1", source="query_token", subprotocol=None)


def test_non_bearer_authorization_header_is_not_a_token() -> None:
    got = extract_token(headers={"Authorization": "Basic dXNlcjpwdw=="}, query={"token": "t1"})
    assert got.source == "query_token"
    with pytest.raises(AuthError) as info:
        extract_token(headers={"Authorization": "Basic dXNlcjpwdw=="}, query={})
    assert info.value.reason == "missing_token"


def test_subprotocol_echoes_the_first_other_item() -> None:
    got = extract_token(headers={"Sec-WebSocket-Protocol": f"bearer, {JWT_LIKE}"}, query={})
    assert got == TokenSource(token=JWT_LIKE, source="subprotocol", subprotocol="bearer")
    got = extract_token(
        headers=CIMultiDict({"sec-websocket-protocol": f"{JWT_LIKE},streamer.v1, bearer"}), query={}
    )
    assert got == TokenSource(token=JWT_LIKE, source="subprotocol", subprotocol="streamer.v1")


def test_subprotocol_token_alone_is_never_echoed() -> None:
    # Issue #18 item 6: the token was echoed back in the response's Sec-WebSocket-Protocol.
    got = extract_token(headers={"Sec-WebSocket-Protocol": JWT_LIKE}, query={})
    assert got == TokenSource(token=JWT_LIKE, source="subprotocol", subprotocol=None)
    got = extract_token(headers={"Sec-WebSocket-Protocol": f"{JWT_LIKE}, {JWT_LIKE}x"}, query={})
    assert got.subprotocol is None


def test_subprotocol_dotted_protocol_names_are_not_tokens() -> None:
    with pytest.raises(AuthError) as info:
        extract_token(headers={"Sec-WebSocket-Protocol": "graphql.transport.ws, streamer.v1"}, query={})
    assert info.value.reason == "missing_token"
    got = extract_token(headers={"Sec-WebSocket-Protocol": f"graphql.transport.ws, {JWT_LIKE}"}, query={})
    assert got.token == JWT_LIKE and got.subprotocol == "graphql.transport.ws"


def test_no_token_anywhere_is_missing_token() -> None:
    with pytest.raises(AuthError) as info:
        extract_token(headers={"Authorization": "Bearer   "}, query={"token": ""})
    assert (info.value.reason, info.value.status) == ("missing_token", 401)


# --------------------------------------------------------------------------- HS256


async def test_valid_hs256_token_gives_identity() -> None:
    token = make_token(secret=SECRET, user="alice", tenant="acme", permissions=["a", "b"], ttl=60)
    identity = await hs_verifier().verify(token)
    assert isinstance(identity, Identity)
    assert (identity.user_id, identity.tenant_id, identity.permissions) == ("alice", "acme", ("a", "b"))
    assert identity.expires_at is not None and identity.expires_at > time.time()
    assert identity.claims["sub"] == "alice"
    with pytest.raises(TypeError):
        identity.claims["sub"] = "mallory"  # type: ignore[index]


async def test_absent_permissions_are_empty() -> None:
    identity = await hs_verifier().verify(hs(permissions=_DROP))
    assert identity.permissions == ()


async def test_wrong_secret_is_bad_signature() -> None:
    token = jwt.encode(claims(), OTHER_SECRET, algorithm="HS256")
    assert (await reason_of(hs_verifier(), token)).reason == "bad_signature"


async def test_tampered_signature_is_bad_signature() -> None:
    assert (await reason_of(hs_verifier(), tamper_signature(hs()))).reason == "bad_signature"


async def test_tampered_payload_is_bad_signature() -> None:
    head, _, sig = hs().split(".")
    forged = f"{head}.{b64(json.dumps(claims(tenant_id='other')).encode())}.{sig}"
    assert (await reason_of(hs_verifier(), forged)).reason == "bad_signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(alg: str) -> None:
    token = raw_token({"alg": alg, "typ": "JWT"}, claims())
    assert (await reason_of(hs_verifier(), token)).reason == "alg_none"


async def test_algorithm_outside_the_allowed_set() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    assert (await reason_of(hs_verifier(), token)).reason == "algorithm_not_allowed"
    assert await hs_verifier(algorithms=["HS256", "HS512"]).verify(token)


async def test_asymmetric_token_against_secret_only_verifier() -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    assert (await reason_of(hs_verifier(), token)).reason == "algorithm_not_allowed"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        b64(b"[1,2]") + "." + b64(b"{}") + ".c2ln",  # header not an object
        b64(b'{"typ":"JWT"}') + "." + b64(b"{}") + ".c2ln",  # no alg
        "x" * 20000,
    ],
)
async def test_garbage_is_malformed_token(token: str) -> None:
    assert (await reason_of(hs_verifier(), token)).reason == "malformed_token"


@pytest.mark.parametrize("payload", [[1], b"not-json", b"\xff\xfe"])
async def test_signed_non_object_payload_is_malformed(payload: Any) -> None:
    token = hmac_token(SECRET.encode(), {"alg": "HS256"}, payload)
    assert (await reason_of(hs_verifier(), token)).reason == "malformed_token"


async def test_empty_token_is_missing_token() -> None:
    assert (await reason_of(hs_verifier(), "  ")).reason == "missing_token"


# --------------------------------------------------------------------------- time claims


async def test_expired() -> None:
    token = hs(exp=int(time.time()) - 120)
    assert (await reason_of(hs_verifier(), token)).reason == "expired"


async def test_expired_within_leeway_passes_and_leeway_zero_refuses() -> None:
    token = hs(exp=int(time.time()) - 5)
    assert await hs_verifier(leeway=30).verify(token)
    assert (await reason_of(hs_verifier(leeway=0), token)).reason == "expired"


async def test_missing_exp_refused_by_default_accepted_when_not_required() -> None:
    token = hs(exp=_DROP)
    err = await reason_of(hs_verifier(), token)
    assert err.reason == "missing_claim" and "exp" in err.message
    identity = await hs_verifier(require_exp=False).verify(token)
    assert identity.expires_at is None


@pytest.mark.parametrize("exp", ["soon", True, float("inf"), [1]])
async def test_non_numeric_exp_is_invalid_claim(exp: Any) -> None:
    assert (await reason_of(hs_verifier(), hs(exp=exp))).reason == "invalid_claim"


async def test_future_nbf_is_not_yet_valid() -> None:
    token = hs(nbf=int(time.time()) + 300)
    assert (await reason_of(hs_verifier(), token)).reason == "not_yet_valid"
    assert await hs_verifier().verify(hs(nbf=int(time.time()) + 5))  # within leeway


async def test_iat_far_in_the_future_is_not_yet_valid() -> None:
    token = hs(iat=int(time.time()) + 3600)
    assert (await reason_of(hs_verifier(), token)).reason == "not_yet_valid"
    assert await hs_verifier().verify(hs(iat=int(time.time()) + 5))  # clock skew within leeway


async def test_non_numeric_nbf_is_invalid_claim() -> None:
    assert (await reason_of(hs_verifier(), hs(nbf="later"))).reason == "invalid_claim"


# --------------------------------------------------------------------------- iss / aud


async def test_wrong_issuer() -> None:
    verifier = hs_verifier(issuer="https://idp.example")
    assert await verifier.verify(hs(iss="https://idp.example"))
    assert (await reason_of(verifier, hs(iss="https://evil.example"))).reason == "wrong_issuer"
    as_list = hmac_token(SECRET.encode(), {"alg": "HS256"}, claims(iss=["https://idp.example"]))
    assert (await reason_of(verifier, as_list)).reason == "wrong_issuer"
    err = await reason_of(verifier, hs())
    assert err.reason == "missing_claim" and "iss" in err.message


async def test_issuer_not_checked_when_not_configured() -> None:
    assert await hs_verifier().verify(hs(iss="https://anyone.example"))


async def test_wrong_audience() -> None:
    verifier = hs_verifier(audience="streamer")
    assert await verifier.verify(hs(aud="streamer"))
    assert await verifier.verify(hs(aud=["other", "streamer"]))
    assert (await reason_of(verifier, hs(aud="other"))).reason == "wrong_audience"
    assert (await reason_of(verifier, hs(aud=["other"]))).reason == "wrong_audience"
    err = await reason_of(verifier, hs())
    assert err.reason == "missing_claim" and "aud" in err.message


async def test_audience_not_checked_when_not_configured() -> None:
    assert await hs_verifier().verify(hs(aud="anything"))


# --------------------------------------------------------------------------- sub / tenant / permissions


@pytest.mark.parametrize("name", ["sub", "tenant_id"])
async def test_missing_identity_claims(name: str) -> None:
    err = await reason_of(hs_verifier(), hs(**{name: _DROP}))
    assert err.reason == "missing_claim" and name in err.message


@pytest.mark.parametrize("name", ["sub", "tenant_id"])
@pytest.mark.parametrize("value", [42, "", "   ", ["acme"], {"id": "x"}])
async def test_identity_claims_must_be_non_empty_strings(name: str, value: Any) -> None:
    err = await reason_of(hs_verifier(), hs(**{name: value}))
    assert err.reason == "invalid_claim" and name in err.message


@pytest.mark.parametrize("value", ["reports:read", ["ok", 3], {"a": 1}, 7])
async def test_permissions_must_be_a_list_of_strings(value: Any) -> None:
    assert (await reason_of(hs_verifier(), hs(permissions=value))).reason == "invalid_claim"


async def test_tenant_not_allowed_is_403() -> None:
    verifier = hs_verifier(allowed_tenants=["globex", "acme"])
    assert (await verifier.verify(hs(tenant_id="acme"))).tenant_id == "acme"
    err = await reason_of(verifier, hs(tenant_id="initech"))
    assert (err.reason, err.status) == ("tenant_not_allowed", 403)


async def test_all_tenants_allowed_when_list_empty() -> None:
    assert await hs_verifier(allowed_tenants=()).verify(hs(tenant_id="anyone"))


# --------------------------------------------------------------------------- RS256 / ES256 with PEM


async def test_rs256_with_pem() -> None:
    verifier = TokenVerifier(public_key=RSA_PEM)
    identity = await verifier.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256"))
    assert identity.user_id == "user-1"
    other = jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256")
    assert (await reason_of(verifier, other)).reason == "bad_signature"
    tampered = tamper_signature(jwt.encode(claims(), RSA_KEY, algorithm="RS256"))
    assert (await reason_of(verifier, tampered)).reason == "bad_signature"


async def test_es256_with_pem() -> None:
    verifier = TokenVerifier(public_key=EC_PEM)
    identity = await verifier.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256"))
    assert identity.tenant_id == "acme"
    tampered = tamper_signature(jwt.encode(claims(), EC_KEY, algorithm="ES256"))
    assert (await reason_of(verifier, tampered)).reason == "bad_signature"


async def test_pem_defaults_allow_rs256_es256_only() -> None:
    verifier = TokenVerifier(public_key=RSA_PEM)
    assert verifier.algorithms == ("RS256", "ES256")
    rs512 = jwt.encode(claims(), RSA_KEY, algorithm="RS512")
    assert (await reason_of(verifier, rs512)).reason == "algorithm_not_allowed"


async def test_hs256_signed_with_the_public_pem_is_refused() -> None:
    """The RS/HS confusion attack: the public key used as the HMAC secret."""
    for pem in (RSA_PEM, EC_PEM):
        token = hmac_token(pem.encode(), {"alg": "HS256", "typ": "JWT"}, claims())
        err = await reason_of(TokenVerifier(public_key=pem), token)
        assert err.reason == "algorithm_not_allowed"


async def test_hs256_with_pem_and_secret_uses_only_the_secret() -> None:
    """Even with HS256 allowed (a secret is configured), the PEM is never an HMAC key."""
    verifier = TokenVerifier(secret=SECRET, public_key=RSA_PEM)
    assert verifier.algorithms == ("HS256", "RS256", "ES256")
    confused = hmac_token(RSA_PEM.encode(), {"alg": "HS256"}, claims())
    assert (await reason_of(verifier, confused)).reason == "bad_signature"
    assert await verifier.verify(hs())
    assert await verifier.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256"))


async def test_key_that_cannot_do_the_algorithm() -> None:
    es_token = jwt.encode(claims(), EC_KEY, algorithm="ES256")
    assert (await reason_of(TokenVerifier(public_key=RSA_PEM), es_token)).reason == "algorithm_not_allowed"
    # ES256 names the P-256 curve; a P-384 key must not verify it.
    p384 = TokenVerifier(public_key=public_pem(EC384_KEY), algorithms=["ES256", "ES384"])
    assert (await reason_of(p384, es_token)).reason == "algorithm_not_allowed"
    assert await p384.verify(jwt.encode(claims(), EC384_KEY, algorithm="ES384"))


async def test_certificate_pem_and_escaped_newlines() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(RSA_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(RSA_KEY, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    assert await TokenVerifier(public_key=cert_pem).verify(token)
    assert await TokenVerifier(public_key=RSA_PEM.replace("\n", "\\n")).verify(token)


# --------------------------------------------------------------------------- configuration


def test_no_key_source_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        TokenVerifier()
    with pytest.raises(ConfigError):
        TokenVerifier.from_settings(load_settings({}))


@pytest.mark.parametrize(
    "kw",
    [
        {"secret": SECRET, "algorithms": ["none"]},
        {"secret": SECRET, "algorithms": ["HS256", "RS256"]},  # RS256 without a public key
        {"public_key": RSA_PEM, "algorithms": ["HS256"]},  # HS256 without a secret
        {"secret": SECRET, "algorithms": ["XS999"]},
        {"secret": SECRET, "algorithms": []},
        {"secret": ""},
        {"secret": RSA_PEM},  # a PEM key is not a secret
        {"public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"},
    ],
)
def test_bad_configuration_is_refused_at_start(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TokenVerifier(**kw)


async def test_from_settings() -> None:
    settings = load_settings(
        {
            "STREAMER_JWT_PUBLIC_KEY": EC_PEM.replace("\n", "\\n"),
            "STREAMER_JWT_ISSUER": "https://idp.example",
            "STREAMER_JWT_AUDIENCE": "streamer",
            "STREAMER_JWT_LEEWAY_SECONDS": "0",
            "STREAMER_ALLOWED_TENANTS": "acme,globex",
        }
    )
    verifier = TokenVerifier.from_settings(settings)
    good = claims(iss="https://idp.example", aud="streamer")
    assert (await verifier.verify(jwt.encode(good, EC_KEY, algorithm="ES256"))).tenant_id == "acme"
    assert (
        await reason_of(verifier, jwt.encode({**good, "aud": "x"}, EC_KEY, algorithm="ES256"))
    ).reason == ("wrong_audience")
    other_tenant = jwt.encode({**good, "tenant_id": "initech"}, EC_KEY, algorithm="ES256")
    assert (await reason_of(verifier, other_tenant)).status == 403
    late = jwt.encode({**good, "exp": int(time.time()) - 2}, EC_KEY, algorithm="ES256")
    assert (await reason_of(verifier, late)).reason == "expired"  # leeway 0 from the settings
    no_exp = {k: v for k, v in good.items() if k != "exp"}
    relaxed = TokenVerifier.from_settings(
        load_settings({"STREAMER_JWT_SECRET": SECRET}, jwt_require_exp=False)
    )
    assert await relaxed.verify(jwt.encode(no_exp, SECRET, algorithm="HS256"))
    assert TokenVerifier.from_settings(
        load_settings({"STREAMER_JWT_SECRET": SECRET, "STREAMER_JWT_ALGORITHMS": "HS256,HS384"})
    ).algorithms == ("HS256", "HS384")


# --------------------------------------------------------------------------- make_token


async def test_make_token_round_trip() -> None:
    token = make_token(
        secret=SECRET,
        user="bob",
        tenant="globex",
        permissions=("x",),
        ttl=30,
        issuer="iss",
        audience="aud",
        extra={"role": "admin"},
    )
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    identity = await TokenVerifier(secret=SECRET, issuer="iss", audience="aud").verify(token)
    assert (identity.user_id, identity.tenant_id, identity.permissions) == ("bob", "globex", ("x",))
    assert identity.claims["role"] == "admin"
    assert identity.expires_at is not None and identity.expires_at <= time.time() + 31
    expired = make_token(secret=SECRET, user="bob", tenant="globex", ttl=-600)
    assert (await reason_of(hs_verifier(), expired)).reason == "expired"
    with pytest.raises(ValueError):
        make_token(secret=SECRET, user="", tenant="t")


# --------------------------------------------------------------------------- no token in messages


async def test_error_messages_never_contain_the_token() -> None:
    rs = TokenVerifier(public_key=RSA_PEM, issuer="i", audience="a", allowed_tenants=["acme"])

    def rs_token(**overrides: Any) -> str:
        return jwt.encode(claims(**{"iss": "i", "aud": "a", **overrides}), RSA_KEY, algorithm="RS256")

    cases: list[tuple[TokenVerifier, str]] = [
        (hs_verifier(), hmac_token(SECRET.encode(), {"alg": "HS256"}, b"not-json-at-all")),
        (hs_verifier(), raw_token({"alg": "none"}, claims())),
        (hs_verifier(), jwt.encode(claims(), SECRET, algorithm="HS512")),
        (hs_verifier(), tamper_signature(hs())),
        (hs_verifier(), hs(exp=1)),
        (hs_verifier(), hs(nbf=int(time.time()) + 999)),
        (rs, rs_token(iss="x")),
        (rs, rs_token(aud="x")),
        (rs, rs_token(sub=_DROP)),
        (rs, rs_token(sub=5)),
        (rs, rs_token(tenant_id="other")),
    ]
    seen = set()
    for verifier, token in cases:
        err = await reason_of(verifier, token)
        seen.add(err.reason)
        for text in (str(err), repr(err), err.message):
            assert token not in text
            for segment in token.split("."):
                assert len(segment) < 8 or segment not in text
        # Nor does a logged traceback: PyJWT's exceptions (which may quote parts) are not chained.
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
        rendered = "".join(traceback.format_exception(err))
        assert token not in rendered and token.split(".")[1] not in rendered
    assert len(seen) == len(cases)


# --- issue #18 item 6: identity edges ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://idp.example/jwks", "http://10.0.0.1/jwks", "http://127.0.0.1.evil.example/jwks", "ftp://x/jwks"],
)
def test_a_jwks_url_must_be_https(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        TokenVerifier(jwks_url=url)
    assert info.value.variable == "STREAMER_JWKS_URL"
    with pytest.raises(ConfigError) as info:
        TokenVerifier(jwks_urls={"https://a": url}, issuer_tenants={"https://a": ["*"]})
    assert info.value.variable == "STREAMER_JWKS_URLS"


@pytest.mark.parametrize(
    "url",
    ["https://idp.example/jwks", "http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]/j"],
)
def test_https_and_loopback_http_jwks_urls_are_accepted(url: str) -> None:
    assert TokenVerifier(jwks_url=url).algorithms


def test_no_audience_configured_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="streamer.auth")
    hs_verifier()
    assert any("STREAMER_JWT_AUDIENCE is not set" in r.getMessage() for r in caplog.records)
    caplog.clear()
    hs_verifier(audience="streamer")
    assert not any("AUDIENCE" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["sub", "tenant_id"])
async def test_ids_longer_than_a_key_part_may_be_are_refused(name: str) -> None:
    verifier = hs_verifier()
    assert await verifier.verify(hs(**{name: "é" * 128}))  # 256 bytes: the limit
    err = await reason_of(verifier, hs(**{name: "é" * 129}))
    assert err.reason == "invalid_claim"


def test_issuer_tenants_setting_is_json_and_reaches_the_verifier() -> None:
    s = load_settings({"STREAMER_JWT_ISSUER_TENANTS": '{"https://a": ["acme", "a#b"], "https://b": ["*"]}'})
    assert s.jwt_issuer_tenants == (("https://a", ("acme", "a#b")), ("https://b", ("*",)))
    for bad in ('["acme"]', '{"https://a": []}', '{"https://a": "acme"}', "https://a=acme"):
        with pytest.raises(ConfigError) as info:
            load_settings({"STREAMER_JWT_ISSUER_TENANTS": bad})
        assert info.value.variable == "STREAMER_JWT_ISSUER_TENANTS"


async def test_a_single_issuer_bound_to_tenants_mints_only_those() -> None:
    verifier = hs_verifier(issuer="https://a", issuer_tenants={"https://a": ["acme"]})
    assert await verifier.verify(hs(iss="https://a"))
    err = await reason_of(verifier, hs(iss="https://a", tenant_id="globex"))
    assert (err.reason, err.status) == ("tenant_not_allowed", 403)
    with pytest.raises(ConfigError):  # a binding for an issuer that is not configured
        hs_verifier(issuer="https://a", issuer_tenants={"https://b": ["acme"]})
