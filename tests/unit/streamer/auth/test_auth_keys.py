"""streamer.auth.keys: RS256/ES256 with a PEM key or certificate; no RS/HS confusion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
from auth_helpers import (
    EC384_KEY,
    EC_KEY,
    EC_PEM,
    OTHER_RSA_KEY,
    RSA_KEY,
    RSA_PEM,
    SECRET,
    claims,
    hs,
    reason_of,
    tamper_signature,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from jwtlib import hmac_signed, public_pem

from streamer.auth import (
    TokenVerifier,
)

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
        token = hmac_signed(pem.encode(), {"alg": "HS256", "typ": "JWT"}, claims())
        err = await reason_of(TokenVerifier(public_key=pem), token)
        assert err.reason == "algorithm_not_allowed"


async def test_hs256_with_pem_and_secret_uses_only_the_secret() -> None:
    """Even with HS256 allowed (a secret is configured), the PEM is never an HMAC key."""
    verifier = TokenVerifier(secret=SECRET, public_key=RSA_PEM)
    assert verifier.algorithms == ("HS256", "RS256", "ES256")
    confused = hmac_signed(RSA_PEM.encode(), {"alg": "HS256"}, claims())
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
