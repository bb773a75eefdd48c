"""This pod's connection records in DynamoDB: written before the upgrade, refreshed, deleted.

The record (with this pod's gRPC address as ``endpoint``) is what lets router and
processor reach a socket. It is written before the 101, so a DynamoDB outage is a 503
rather than a socket nobody can reach; refreshed (last-seen and TTL) at most every
``STREAMER_WS_TOUCH_SECONDS`` while the client shows it is there, and written again if
someone deleted it as stale while the socket is open; deleted — subscriptions first —
on any disconnect. :attr:`ConnectionRecords.registered` is what a drain must still
delete when sockets did not close in time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

from services.connect.session import ClientConnection
from streamer.store import ConnectionRecord, NotFound, Store, StoreError

log = logging.getLogger(__name__)


class ConnectionRecords:
    """Writes, refreshes and deletes the records of the sockets this pod holds."""

    def __init__(self, *, store: Store, endpoint: str, touch_seconds: float) -> None:
        self.store = store
        self.endpoint = endpoint
        self.touch_seconds = touch_seconds
        #: Connection ids whose record this pod wrote and has not deleted yet.
        self.registered: set[str] = set()

    async def register(self, record: ConnectionRecord) -> None:
        """Write the record (:class:`StoreError` when DynamoDB refuses)."""
        await self.store.connections.put(record)
        self.registered.add(record.connection_id)

    async def forget(self, connection_id: str) -> None:
        """Delete the subscriptions, then the record (only if it still points here).

        Subscriptions first, so whoever sees the record gone also sees them gone.
        """
        try:
            await self.store.subscriptions.delete_for_connection(connection_id)
        except StoreError:
            log.exception("could not delete the connection's subscriptions; their TTL will")
        try:
            await self.store.connections.delete(connection_id, endpoint=self.endpoint)
        except StoreError:
            log.exception("could not delete the connection record; its TTL will")
        self.registered.discard(connection_id)

    def maybe_touch(self, conn: ClientConnection) -> None:
        """Refresh the record in the background if it is due (the client was seen)."""
        if conn.touch_due(self.touch_seconds):
            conn.spawn(self._touch(conn))

    async def _touch(self, conn: ClientConnection) -> None:
        """Refresh last-seen and the TTL; re-register a record someone deleted as stale."""
        try:
            await self.store.connections.touch(conn.connection_id)
        except NotFound:
            if not conn.closing:
                log.warning("connection record vanished while the socket is open; writing it again")
                now = time.time()
                record = dataclasses.replace(
                    conn.record, last_seen=now, ttl=int(now + (conn.record.ttl - conn.record.connected_at))
                )
                with contextlib.suppress(StoreError):
                    await self.store.connections.put(record)
        except StoreError:
            log.warning("could not refresh the connection record", exc_info=True)
        finally:
            conn.touching = False
