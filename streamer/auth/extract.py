"""Where a WebSocket upgrade carries its bearer token: header, query or subprotocol.

Browsers cannot set headers on ``new WebSocket()``, which is why the query string and the
``Sec-WebSocket-Protocol`` header are accepted too; the latter also tells the server which
subprotocol to select: another protocol offered with the token (``bearer``,
``streamer.v1``), never the token itself (a response header is logged and cached by proxies
as freely as a URL), so a browser must offer one besides the token.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping

from streamer.auth.errors import AuthError

__all__ = ["TokenSource", "extract_token"]

_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


@dataclasses.dataclass(frozen=True)
class TokenSource:
    """Where :func:`extract_token` found the token.

    ``subprotocol`` is set only for ``source == "subprotocol"``: the value the server must
    select (echo in ``Sec-WebSocket-Protocol``) so the browser accepts the handshake.
    """

    token: str
    source: str
    subprotocol: str | None


def _lookup(mapping: Mapping[str, str], name: str) -> list[str]:
    """All values of ``name``, case-insensitively, for plain dicts and multidicts alike."""
    wanted = name.lower()
    return [str(value) for key, value in mapping.items() if key.lower() == wanted]


def _bearer(value: str, *, bare_allowed: bool) -> str | None:
    """The token of ``Bearer <t>`` (scheme case-insensitive), or the bare value if allowed."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        token = rest.strip()
        return token or None
    if bare_allowed and value and " " not in value:
        return value
    return None


def _looks_like_jwt(item: str) -> bool:
    """Three base64url segments whose first decodes to a JSON object (``{...``).

    Decoding the header tells a token apart from dotted protocol names such as
    ``graphql.transport.ws``.
    """
    if not _JWT_SHAPE.match(item):
        return False
    head = item.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    except (binascii.Error, ValueError):
        return False
    return decoded.lstrip().startswith(b"{")


def extract_token(*, headers: Mapping[str, str], query: Mapping[str, str]) -> TokenSource:
    """Find the bearer token of a WebSocket upgrade request.

    Sources, first match wins: the ``Authorization: Bearer`` header; the ``Authorization``
    query parameter (``Bearer <t>`` or the bare token); the ``token`` query parameter;
    the ``Sec-WebSocket-Protocol`` header, where the item shaped like a JWT is the token
    and the subprotocol to select is the first other item offered (``bearer``,
    ``streamer.v1``...); when the token was offered alone there is none (the token is
    never echoed back).
    Header and parameter names are matched case-insensitively.

    Raises ``AuthError("missing_token")`` when no source holds a token.
    """
    for value in _lookup(headers, "Authorization"):
        token = _bearer(value, bare_allowed=False)
        if token:
            return TokenSource(token=token, source="header", subprotocol=None)
    for value in _lookup(query, "Authorization"):
        token = _bearer(value, bare_allowed=True)
        if token:
            return TokenSource(token=token, source="query_authorization", subprotocol=None)
    for value in _lookup(query, "token"):
        token = value.strip()
        if token:
            return TokenSource(token=token, source="query_token", subprotocol=None)
    offered = [
        item.strip() for value in _lookup(headers, "Sec-WebSocket-Protocol") for item in value.split(",")
    ]
    offered = [item for item in offered if item]
    token = next((item for item in offered if _looks_like_jwt(item)), None)
    if token is not None:
        # Never the token itself: it would be echoed in the response header.
        others = [item for item in offered if item != token and not _looks_like_jwt(item)]
        return TokenSource(token=token, source="subprotocol", subprotocol=others[0] if others else None)
    raise AuthError("missing_token", "no bearer token in the Authorization header, query or subprotocol")
