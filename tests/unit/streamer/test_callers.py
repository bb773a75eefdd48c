"""Caller policy parsing, service tokens and the allow rule (``streamer.callers``)."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from streamer.callers import (
    AUDIENCE,
    Caller,
    CallerPolicy,
    ServiceToken,
    Unauthenticated,
    signer,
    verify_token,
)
from streamer.config import CallerRule, ConfigError, load_settings

SECRET = "s" * 32


def policy(doc: object) -> CallerPolicy:
    return CallerPolicy.from_settings(load_settings({"STREAMER_CALLER_POLICY": json.dumps(doc)}))


def test_policy_is_parsed_and_checked_at_start() -> None:
    rules = load_settings(
        {"STREAMER_CALLER_POLICY": '{"billing": {"rpcs": ["Publish"], "tenants": ["acme"]}}'}
    )
    assert rules.caller_policy == (CallerRule(name="billing", rpcs=("Publish",), tenants=("acme",)),)
    assert load_settings({"STREAMER_CALLER_POLICY": '{"ops": {"rpcs": ["*"]}}'}).caller_policy == (
        CallerRule(name="ops", rpcs=("*",), tenants=("*",)),
    )
    for bad in ("[]", "{", '{"a": {"rpcs": ["Delete"]}}', '{"a": {"rpcs": "Publish"}}', '{"a": {"rpc": []}}'):
        with pytest.raises(ConfigError) as err:
            load_settings({"STREAMER_CALLER_POLICY": bad})
        assert err.value.variable == "STREAMER_CALLER_POLICY"
    with pytest.raises(ConfigError) as err:
        load_settings({"STREAMER_SERVICE_TOKEN_SECRET": "short"})
    assert "short" not in str(err.value)  # a secret is never echoed


def test_allow_rule() -> None:
    gate = policy(
        {"billing": {"rpcs": ["Publish", "Submit"], "tenants": ["acme"]}, "connect": {"rpcs": ["Route"]}}
    )
    billing, connect, nobody = (
        Caller(("billing",), "token"),
        Caller(("x", "connect"), "mtls"),
        Caller((), "none"),
    )
    assert gate.allows(billing, "Publish", ["acme"]) and gate.allows(billing, "Submit", ["acme"])
    assert not gate.allows(billing, "Publish", ["globex"]) and not gate.allows(billing, "Route", ["acme"])
    assert gate.allows(connect, "Route", ["any-tenant"]) and not gate.allows(connect, "Publish", [])
    assert not gate.allows(nobody, "Publish", ["acme"])
    assert CallerPolicy(rules=None).allows(nobody, "Route", ["t"])  # no policy: open
    assert not policy({}).allows(billing, "Publish", [])  # an empty policy allows nobody


def test_service_tokens() -> None:
    token = ServiceToken(secret=SECRET, name="billing", lifetime=60).token()
    assert verify_token(token, secret=SECRET, max_lifetime=60)[0] == "billing"
    with pytest.raises(Unauthenticated):
        verify_token(token, secret="t" * 32, max_lifetime=60)
    with pytest.raises(Unauthenticated):  # longer-lived than allowed
        verify_token(token, secret=SECRET, max_lifetime=30)
    now = int(time.time())
    user_jwt = jwt.encode({"sub": "alice", "tenant_id": "acme", "iat": now, "exp": now + 60}, SECRET)
    with pytest.raises(Unauthenticated):  # a user's token is not a service token (no aud)
        verify_token(user_jwt, secret=SECRET, max_lifetime=60)
    expired = jwt.encode({"sub": "b", "aud": AUDIENCE, "iat": now - 600, "exp": now - 540}, SECRET)
    with pytest.raises(Unauthenticated):
        verify_token(expired, secret=SECRET, max_lifetime=60)


def test_a_signer_needs_a_name() -> None:
    assert signer(load_settings({})) is None
    with pytest.raises(ConfigError) as err:
        signer(load_settings({"STREAMER_SERVICE_TOKEN_SECRET": SECRET}))
    assert err.value.variable == "STREAMER_SERVICE_NAME"
    made = signer(load_settings({"STREAMER_SERVICE_TOKEN_SECRET": SECRET}), default_name="connect")
    assert made is not None and made.name == "connect"


def test_a_verified_token_is_remembered_until_it_expires() -> None:
    gate = CallerPolicy(rules=[], secret=SECRET)
    token = ServiceToken(secret=SECRET, name="billing", lifetime=60).token()
    assert gate._verify(token) == "billing"
    gate.secret = "another-secret-" * 3  # a cached token is not verified again...
    assert gate._verify(token) == "billing"
    gate._verified[token] = ("billing", time.time() - 60)  # ... until it expired
    with pytest.raises(Unauthenticated):
        gate._verify(token)
