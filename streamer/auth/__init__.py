"""JWT verification for the WebSocket gateway (DESIGN §2 "Auth").

The connect service authenticates the HTTP upgrade *before* it becomes a WebSocket, so a
refused client gets a plain 401/403 and never a socket. The package, one concern a module
(each row imports only the rows below it):

- :mod:`~streamer.auth.verify` — :class:`TokenVerifier`: the configured keys and algorithms,
  the signature, then the claims; returns an :class:`Identity`.
- :mod:`~streamer.auth.jwks` — JWKS fetching and caching per ``(issuer, kid)``, https only.
- :mod:`~streamer.auth.claims` — :class:`~streamer.auth.claims.ClaimPolicy`: ``iss``,
  ``aud``, times, identity claims and the issuer→tenant binding.
- :mod:`~streamer.auth.extract` — :func:`extract_token`: header, query or
  ``Sec-WebSocket-Protocol``.
- :mod:`~streamer.auth.keys` — which key may verify which algorithm (no RS/HS confusion).
- :mod:`~streamer.auth.errors` — :class:`AuthError` with a stable ``reason`` (one of
  :data:`REASONS`) for metrics and logs, and an HTTP ``status``.

Development tokens (:func:`make_token`) live in :mod:`streamer.tokens`, outside this package,
so the client's light install (aiohttp, PyJWT, rich) can make one without the server's
libraries; they are re-exported here.

Security decisions, each deliberate (details in each module):

- The algorithm is checked against an allow-list *before* a key is chosen, and HMAC tokens
  are only ever verified with the configured secret, never with a public key. That is what
  defeats the classic RS/HS confusion (an HS256 token "signed" with the public PEM as the
  HMAC secret).
- Default algorithms follow the key kind: a secret allows HS256 only; a PEM key or a JWKS
  URL allows RS256 and ES256 only. A key that cannot do the token's algorithm is refused as
  ``algorithm_not_allowed``.
- A JWKS key published by one issuer never verifies another issuer's token; a burst of
  unknown ``kid`` values cannot become a fetch storm; JWKS URLs must be ``https://``.
- With several issuers, each issuer is bound to the tenants it may mint
  (``STREAMER_JWT_ISSUER_TENANTS``); several issuers without a binding stop the service at
  start. Without ``STREAMER_JWT_AUDIENCE`` the verifier logs a warning at start.
- Error messages never contain the token, and PyJWT's exceptions are not chained into ours.
"""

from __future__ import annotations

from streamer.auth.claims import MAX_CLAIM_BYTES, Identity
from streamer.auth.errors import REASONS, AuthError
from streamer.auth.extract import TokenSource, extract_token
from streamer.auth.verify import TokenVerifier
from streamer.tokens import make_token

__all__ = [
    "MAX_CLAIM_BYTES",
    "REASONS",
    "AuthError",
    "Identity",
    "TokenSource",
    "TokenVerifier",
    "extract_token",
    "make_token",
]
