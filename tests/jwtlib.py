"""JWTs made by hand for the auth tests (unit, connect, security): the shapes PyJWT refuses
to make (``alg: none``, a signature over anything, any secret bytes) and PEM public keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["assembled", "b64url", "hmac_signed", "public_pem"]


def b64url(data: bytes) -> str:
    """base64url without padding, as in a JWS."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _part(value: Mapping[str, Any] | bytes | Any) -> str:
    return b64url(value if isinstance(value, bytes) else json.dumps(value).encode())


def assembled(header: Mapping[str, Any], payload: Any, signature: bytes = b"") -> str:
    """``header.payload.signature``, each part as given (a payload of bytes is taken as is)."""
    return ".".join([_part(header), _part(payload), b64url(signature)])


def hmac_signed(secret: bytes, header: Mapping[str, Any], payload: Any) -> str:
    """HMAC-SHA256 over ``header.payload`` with any secret bytes (the RS/HS confusion signs
    with the public PEM)."""
    signing_input = f"{_part(header)}.{_part(payload)}"
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"
