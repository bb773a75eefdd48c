"""streamer.auth.jwks without the network: which JWKS URLs are accepted.

JWKS over HTTP is in tests/integration/test_jwks.py.
"""

from __future__ import annotations

import pytest

from streamer.auth import (
    TokenVerifier,
)
from streamer.config import ConfigError


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
