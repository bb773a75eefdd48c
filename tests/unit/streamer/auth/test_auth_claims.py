"""streamer.auth.claims: times, issuer, audience, identity claims, tenant bindings (through the verifier)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from auth_helpers import (
    DROP,
    SECRET,
    claims,
    hs,
    hs_verifier,
    reason_of,
)
from jwtlib import hmac_signed

from streamer.auth import AuthError
from streamer.auth.claims import ANY_TENANT, ClaimPolicy
from streamer.config import ConfigError, load_settings

# --------------------------------------------------------------------------- time claims


async def test_expired() -> None:
    token = hs(exp=int(time.time()) - 120)
    assert (await reason_of(hs_verifier(), token)).reason == "expired"


async def test_expired_within_leeway_passes_and_leeway_zero_refuses() -> None:
    token = hs(exp=int(time.time()) - 5)
    assert await hs_verifier(leeway=30).verify(token)
    assert (await reason_of(hs_verifier(leeway=0), token)).reason == "expired"


async def test_missing_exp_refused_by_default_accepted_when_not_required() -> None:
    token = hs(exp=DROP)
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
    as_list = hmac_signed(SECRET.encode(), {"alg": "HS256"}, claims(iss=["https://idp.example"]))
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
    err = await reason_of(hs_verifier(), hs(**{name: DROP}))
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


def test_the_claim_policy_alone_needs_no_signature() -> None:
    policy = ClaimPolicy(issuers=frozenset({"https://a"}), audience="streamer", leeway=0)
    identity = policy.identity(claims(iss="https://a", aud=["other", "streamer"]))
    assert (identity.user_id, identity.tenant_id, identity.permissions) == (
        "user-1",
        "acme",
        ("reports:read",),
    )
    with pytest.raises(AuthError) as info:
        policy.identity(claims(iss="https://a", aud="other"))
    assert info.value.reason == "wrong_audience"
    with pytest.raises(AuthError) as info:
        ClaimPolicy(issuer_tenants={"https://a": frozenset({ANY_TENANT})}).identity(claims(iss="https://b"))
    assert (info.value.reason, info.value.status) == ("tenant_not_allowed", 403)
    assert ClaimPolicy(issuer_tenants={"https://a": frozenset({ANY_TENANT})}).identity(
        claims(iss="https://a")
    )
