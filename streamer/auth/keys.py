"""Which key may verify which algorithm, and public keys from PEM.

The key is chosen by the algorithm's family: HMAC tokens are only ever verified with the
configured secret, never with a public key (that defeats the RS/HS confusion). A key that
cannot do the token's algorithm (an ES256 token against an RSA key) does not fit.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from streamer.config import ConfigError

__all__ = [
    "DEFAULT_ASYMMETRIC",
    "DEFAULT_HMAC",
    "HMAC_ALGORITHMS",
    "PublicKey",
    "key_fits",
    "load_pem",
]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
    "ES521": ec.SECP521R1,
    "ES256K": ec.SECP256K1,
}
#: Default algorithms follow the key kind: a secret allows HS256 only; a PEM key or a
#: JWKS URL allows RS256 and ES256 only.
DEFAULT_HMAC = ("HS256",)
DEFAULT_ASYMMETRIC = ("RS256", "ES256")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


def key_fits(alg: str, key: Any, declared_alg: str | None = None) -> bool:
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


def load_pem(pem: str) -> PublicKey:
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
    if not isinstance(key, PublicKey):
        raise ConfigError("STREAMER_JWT_PUBLIC_KEY", f"unsupported key type {type(key).__name__}")
    return key
