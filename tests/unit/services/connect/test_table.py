"""The pod's socket table: by id, and by the exact (tenant, user) of each socket's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from services.connect.session import ClientConnection
from services.connect.table import SocketTable


@dataclass
class Who:
    tenant_id: str
    user_id: str


@dataclass
class Sock:
    connection_id: str
    identity: Who


def sock(cid: str, tenant: str, user: str) -> ClientConnection:
    return cast(ClientConnection, Sock(cid, Who(tenant, user)))


def ids(socks: list[ClientConnection]) -> set[str]:
    return {s.connection_id for s in socks}


def test_the_audience_is_exactly_the_tenant_or_the_user_in_it() -> None:
    table = SocketTable()
    for s in (
        sock("a1", "acme", "alice"),
        sock("a2", "acme", "alice"),
        sock("b1", "acme", "bob"),
        sock("g1", "globex", "alice"),
    ):
        table.add(s)
    assert ids(table.audience("acme")) == {"a1", "a2", "b1"}
    assert ids(table.audience("acme", "alice")) == {"a1", "a2"}
    assert ids(table.audience("globex", "alice")) == {"g1"}
    assert table.audience("nobody") == [] and table.audience("acme", "carol") == []
    assert len(table) == 4 and set(table) == {"a1", "a2", "b1", "g1"}


def test_ids_holding_separators_never_reach_another_tenant() -> None:
    """The issue's leak: user ``u#v`` of tenant ``t9`` vs user ``v`` of tenant ``t9#u``,
    and ids that look like length-prefixed keys."""
    table = SocketTable()
    table.add(sock("x", "t9", "u#v"))
    table.add(sock("y", "t9#u", "v"))
    table.add(sock("z", "2:t9", "1:u"))
    table.add(sock("w", "t9", ""))
    assert ids(table.audience("t9")) == {"x", "w"}
    assert ids(table.audience("t9#u")) == {"y"}
    assert ids(table.audience("t9", "u#v")) == {"x"}
    assert ids(table.audience("t9#u", "v")) == {"y"}
    assert table.audience("t9", "u") == [] and table.audience("t9#u#v") == []
    assert ids(table.audience("2:t9")) == {"z"} and table.audience("2:t9#1:u") == []
    assert table.audience("") == []


def test_removal_empties_the_indexes_and_only_removes_the_socket_it_is_given() -> None:
    table = SocketTable()
    first = sock("c", "acme", "alice")
    table.add(first)
    again = sock("c", "acme", "bob")  # the same id re-added: the old entry goes everywhere
    table.add(again)
    assert ids(table.audience("acme", "alice")) == set()
    table.remove(first)  # not the one held: nothing happens
    assert ids(table.audience("acme", "bob")) == {"c"}
    table.remove(again)
    assert len(table) == 0 and table.audience("acme") == [] and table == {}
