"""The sockets this pod holds, by connection id (what ``Connections`` looks frames up in)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from services.connect.session import ClientConnection


class SocketTable(Mapping[str, ClientConnection]):
    """Connection id → open socket of this pod; read-only for everyone but the upgrade."""

    def __init__(self) -> None:
        self._by_id: dict[str, ClientConnection] = {}

    def __getitem__(self, connection_id: str) -> ClientConnection:
        return self._by_id[connection_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, conn: ClientConnection) -> None:
        self._by_id[conn.connection_id] = conn

    def remove(self, conn: ClientConnection) -> None:
        if self._by_id.get(conn.connection_id) is conn:
            del self._by_id[conn.connection_id]
