"""Every DynamoDB key built from more than one id, built one unambiguous way.

A key joined with a separator (``f"{tenant}#{user}"``) is ambiguous as soon as an id
may contain the separator: user ``u#v`` of tenant ``t9`` and user ``v`` of tenant
``t9#u`` both gave ``t9#u#v``, and the second one's ``$resume`` returned the first
one's requests. Ids come from tokens and clients, so any character is possible.

Here each component is written as ``<length>:<text>`` (the length in characters) and
the components are joined with ``#``: ``compose("t9", "u#v") == "2:t9#3:u#v"``. A
reader knows where each component ends from its length alone, so two different
tuples never give the same key (:func:`split` is the inverse; tests try every
separator and unicode). Keys stay about as long as the ids themselves, well under
DynamoDB's 2,048-byte partition-key limit for ids of the sizes the boundaries allow
(request ids ≤ 128 ASCII characters; tokens' ``sub`` and ``tenant_id`` are bounded
at the gateway).

Use these functions for every composed key — never an f-string.
"""

from __future__ import annotations

SEPARATOR = "#"


def compose(*parts: str) -> str:
    """One key from ``parts``; injective: different tuples never give the same key."""
    if not parts:
        raise ValueError("a key needs at least one part")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"key parts are strings, not {type(part).__name__}")
    return SEPARATOR.join(f"{len(part)}:{part}" for part in parts)


def split(key: str) -> tuple[str, ...]:
    """The parts :func:`compose` built ``key`` from; ``ValueError`` if it did not build it."""
    parts: list[str] = []
    i = 0
    while True:
        colon = key.find(":", i)
        digits = key[i:colon] if colon >= 0 else ""
        if not digits.isascii() or not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
            raise ValueError(f"not a composed key: {key!r}")
        end = colon + 1 + int(digits)
        if end > len(key):
            raise ValueError(f"not a composed key: {key!r}")
        parts.append(key[colon + 1 : end])
        if end == len(key):
            return tuple(parts)
        if key[end] != SEPARATOR:
            raise ValueError(f"not a composed key: {key!r}")
        i = end + 1


def request_key(tenant_id: str, request_id: str) -> str:
    """The requests (and subscriptions) table key: request ids are scoped per tenant.

    Two tenants may use the same id without meeting: each sees only its own request,
    and neither learns that the other's exists.
    """
    return compose(tenant_id, request_id)


def user_key(tenant_id: str, user_id: str) -> str:
    """The requests ``user-index`` hash key: a user id is only unique within its tenant."""
    return compose(tenant_id, user_id)


def lease_key(stream_arn: str, shard_id: str) -> str:
    """A shard lease: a recreated table's new stream never collides with the old one's."""
    return compose(stream_arn, shard_id)


def client_request_id(key: str) -> str:
    """The id the client gave, from a :func:`request_key` (a bare id is returned as is)."""
    try:
        parts = split(key)
    except ValueError:
        return key
    return parts[1] if len(parts) == 2 else key
