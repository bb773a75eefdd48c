"""The sockets this pod holds: by connection id, and by tenant and user.

``Connections.Send`` looks a socket up by id; ``Connections.SendToAudience`` takes every
socket of a tenant (or of one user in it) from the indexes here, so a publish to a
tenant costs no DynamoDB read. The indexes are keyed by the exact (tenant, user) of the
verified identity the socket was opened with — tuples, never joined strings — so a
tenant id holding a separator can never match another tenant's sockets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

from services.connect.session import ClientConnection

K = TypeVar("K")


class SocketTable(Mapping[str, ClientConnection]):
    """Connection id → open socket of this pod; read-only for everyone but the upgrade."""

    def __init__(self) -> None:
        self._by_id: dict[str, ClientConnection] = {}
        self._by_tenant: dict[str, dict[str, ClientConnection]] = {}
        self._by_user: dict[tuple[str, str], dict[str, ClientConnection]] = {}

    def __getitem__(self, connection_id: str) -> ClientConnection:
        return self._by_id[connection_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, conn: ClientConnection) -> None:
        old = self._by_id.get(conn.connection_id)
        if old is not None:
            self.remove(old)
        cid, tenant, user = conn.connection_id, conn.identity.tenant_id, conn.identity.user_id
        self._by_id[cid] = conn
        self._by_tenant.setdefault(tenant, {})[cid] = conn
        self._by_user.setdefault((tenant, user), {})[cid] = conn

    def remove(self, conn: ClientConnection) -> None:
        cid = conn.connection_id
        if self._by_id.get(cid) is not conn:
            return
        del self._by_id[cid]
        tenant, user = conn.identity.tenant_id, conn.identity.user_id
        _discard(self._by_tenant, tenant, cid)
        _discard(self._by_user, (tenant, user), cid)

    def audience(self, tenant_id: str, user_id: str | None = None) -> list[ClientConnection]:
        """Every socket of ``tenant_id`` (of ``user_id`` in it, when given), exactly matched."""
        group = self._by_tenant.get(tenant_id) if user_id is None else self._by_user.get((tenant_id, user_id))
        return list(group.values()) if group else []


def _discard(index: dict[K, dict[str, ClientConnection]], key: K, cid: str) -> None:
    group = index.get(key)
    if group is not None:
        group.pop(cid, None)
        if not group:
            del index[key]
