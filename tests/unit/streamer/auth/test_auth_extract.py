"""streamer.auth.extract: where the upgrade request carries the token."""

from __future__ import annotations

import pytest
from auth_helpers import (
    SECRET,
)
from multidict import CIMultiDict, MultiDict

from streamer.auth import (
    AuthError,
    TokenSource,
    extract_token,
    make_token,
)

# --------------------------------------------------------------------------- token sources

JWT_LIKE = make_token(secret=SECRET, user="u", tenant="t")


def test_header_bearer_name_and_scheme_case_insensitive() -> None:
    got = extract_token(headers={"authorization": "bEaReR  abc.def.ghi "}, query={})
    assert got == TokenSource(token="abc.def.ghi", source="header", subprotocol=None)
    got = extract_token(headers=CIMultiDict({"AUTHORIZATION": "Bearer tok"}), query={})
    assert got.token == "tok" and got.source == "header"


def test_header_wins_over_query_and_subprotocol() -> None:
    got = extract_token(
        headers={"Authorization": "Bearer from-header", "Sec-WebSocket-Protocol": f"bearer, {JWT_LIKE}"},
        query={"Authorization": "Bearer from-query", "token": "from-token"},
    )
    assert got.source == "header" and got.token == "from-header"


def test_query_authorization_with_bearer_or_bare_token() -> None:
    got = extract_token(headers={}, query={"Authorization": "Bearer q1"})
    assert got == TokenSource(token="q1", source="query_authorization", subprotocol=None)
    got = extract_token(headers={}, query=MultiDict({"Authorization": "q2"}))
    assert got == TokenSource(token="q2", source="query_authorization", subprotocol=None)


def test_query_authorization_wins_over_query_token() -> None:
    got = extract_token(headers={}, query={"token": "t1", "Authorization": "a1"})
    assert got.source == "query_authorization" and got.token == "a1"


def test_query_token() -> None:
    got = extract_token(headers={}, query={"token": "t1"})
    assert got == TokenSource(token="t1", source="query_token", subprotocol=None)


def test_non_bearer_authorization_header_is_not_a_token() -> None:
    got = extract_token(headers={"Authorization": "Basic dXNlcjpwdw=="}, query={"token": "t1"})
    assert got.source == "query_token"
    with pytest.raises(AuthError) as info:
        extract_token(headers={"Authorization": "Basic dXNlcjpwdw=="}, query={})
    assert info.value.reason == "missing_token"


def test_subprotocol_echoes_the_first_other_item() -> None:
    got = extract_token(headers={"Sec-WebSocket-Protocol": f"bearer, {JWT_LIKE}"}, query={})
    assert got == TokenSource(token=JWT_LIKE, source="subprotocol", subprotocol="bearer")
    got = extract_token(
        headers=CIMultiDict({"sec-websocket-protocol": f"{JWT_LIKE},streamer.v1, bearer"}), query={}
    )
    assert got == TokenSource(token=JWT_LIKE, source="subprotocol", subprotocol="streamer.v1")


def test_subprotocol_token_alone_is_never_echoed() -> None:
    # Issue #18 item 6: the token was echoed back in the response's Sec-WebSocket-Protocol.
    got = extract_token(headers={"Sec-WebSocket-Protocol": JWT_LIKE}, query={})
    assert got == TokenSource(token=JWT_LIKE, source="subprotocol", subprotocol=None)
    got = extract_token(headers={"Sec-WebSocket-Protocol": f"{JWT_LIKE}, {JWT_LIKE}x"}, query={})
    assert got.subprotocol is None


def test_subprotocol_dotted_protocol_names_are_not_tokens() -> None:
    with pytest.raises(AuthError) as info:
        extract_token(headers={"Sec-WebSocket-Protocol": "graphql.transport.ws, streamer.v1"}, query={})
    assert info.value.reason == "missing_token"
    got = extract_token(headers={"Sec-WebSocket-Protocol": f"graphql.transport.ws, {JWT_LIKE}"}, query={})
    assert got.token == JWT_LIKE and got.subprotocol == "graphql.transport.ws"


def test_no_token_anywhere_is_missing_token() -> None:
    with pytest.raises(AuthError) as info:
        extract_token(headers={"Authorization": "Bearer   "}, query={"token": ""})
    assert (info.value.reason, info.value.status) == ("missing_token", 401)
