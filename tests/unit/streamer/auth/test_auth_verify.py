"""streamer.auth.verify: TokenVerifier end to end without the network (HS256, configuration,
no token in messages).
"""

from __future__ import annotations

import json
import time
import traceback
from typing import Any

import jwt
import pytest
from auth_helpers import (
    DROP,
    EC_KEY,
    EC_PEM,
    OTHER_SECRET,
    RSA_KEY,
    RSA_PEM,
    SECRET,
    claims,
    hs,
    hs_verifier,
    reason_of,
    tamper_signature,
)
from jwtlib import assembled, b64url, hmac_signed

from streamer.auth import (
    Identity,
    TokenVerifier,
    make_token,
)
from streamer.config import ConfigError, load_settings

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
    identity = await hs_verifier().verify(hs(permissions=DROP))
    assert identity.permissions == ()


async def test_wrong_secret_is_bad_signature() -> None:
    token = jwt.encode(claims(), OTHER_SECRET, algorithm="HS256")
    assert (await reason_of(hs_verifier(), token)).reason == "bad_signature"


async def test_tampered_signature_is_bad_signature() -> None:
    assert (await reason_of(hs_verifier(), tamper_signature(hs()))).reason == "bad_signature"


async def test_tampered_payload_is_bad_signature() -> None:
    head, _, sig = hs().split(".")
    forged = f"{head}.{b64url(json.dumps(claims(tenant_id='other')).encode())}.{sig}"
    assert (await reason_of(hs_verifier(), forged)).reason == "bad_signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(alg: str) -> None:
    token = assembled({"alg": alg, "typ": "JWT"}, claims())
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
        b64url(b"[1,2]") + "." + b64url(b"{}") + ".c2ln",  # header not an object
        b64url(b'{"typ":"JWT"}') + "." + b64url(b"{}") + ".c2ln",  # no alg
        "x" * 20000,
    ],
)
async def test_garbage_is_malformed_token(token: str) -> None:
    assert (await reason_of(hs_verifier(), token)).reason == "malformed_token"


@pytest.mark.parametrize("payload", [[1], b"not-json", b"\xff\xfe"])
async def test_signed_non_object_payload_is_malformed(payload: Any) -> None:
    token = hmac_signed(SECRET.encode(), {"alg": "HS256"}, payload)
    assert (await reason_of(hs_verifier(), token)).reason == "malformed_token"


async def test_empty_token_is_missing_token() -> None:
    assert (await reason_of(hs_verifier(), "  ")).reason == "missing_token"


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


# --------------------------------------------------------------------------- no token in messages


async def test_error_messages_never_contain_the_token() -> None:
    rs = TokenVerifier(public_key=RSA_PEM, issuer="i", audience="a", allowed_tenants=["acme"])

    def rs_token(**overrides: Any) -> str:
        return jwt.encode(claims(**{"iss": "i", "aud": "a", **overrides}), RSA_KEY, algorithm="RS256")

    cases: list[tuple[TokenVerifier, str]] = [
        (hs_verifier(), hmac_signed(SECRET.encode(), {"alg": "HS256"}, b"not-json-at-all")),
        (hs_verifier(), assembled({"alg": "none"}, claims())),
        (hs_verifier(), jwt.encode(claims(), SECRET, algorithm="HS512")),
        (hs_verifier(), tamper_signature(hs())),
        (hs_verifier(), hs(exp=1)),
        (hs_verifier(), hs(nbf=int(time.time()) + 999)),
        (rs, rs_token(iss="x")),
        (rs, rs_token(aud="x")),
        (rs, rs_token(sub=DROP)),
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


def test_no_audience_configured_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="streamer.auth")
    hs_verifier()
    assert any("STREAMER_JWT_AUDIENCE is not set" in r.getMessage() for r in caplog.records)
    caplog.clear()
    hs_verifier(audience="streamer")
    assert not any("AUDIENCE" in r.getMessage() for r in caplog.records)
