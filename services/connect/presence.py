"""This pod's entry in the connect pods directory (``streamer.store.pods``).

A publish to a tenant or a user reaches every pod listed there, so the entry is written
*before* the WebSocket port accepts anything, refreshed every
:data:`PRESENCE_SECONDS` / 3, and removed when the pod stops (after its sockets are
closed). If DynamoDB cannot be reached at start the pod starts anyway and keeps trying:
an upgrade needs DynamoDB too (its record), so no socket is accepted that a publish
could not find.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Final

from streamer.store import Store, StoreError
from streamer.tasks import Background, every

log = logging.getLogger(__name__)

#: Seconds an entry stays valid without a refresh (a dead pod is called for that long).
PRESENCE_SECONDS: Final = 30.0


class Presence:
    """Keeps this pod listed while it runs."""

    def __init__(self, *, store: Store, endpoint: str, seconds: float = PRESENCE_SECONDS) -> None:
        self.store = store
        self.endpoint = endpoint
        self.seconds = seconds
        self._loop = Background("connect presence")

    async def beat(self) -> None:
        await self.store.pods.beat(self.endpoint, duration=self.seconds)

    async def start(self) -> None:
        try:
            await self.beat()
        except StoreError:
            log.warning("could not list this pod in the connect pods directory; retrying", exc_info=True)
        self._loop.start(every(self.seconds / 3, self.beat, what="connect presence", logger=log))

    async def stop(self) -> None:
        await self._loop.stop()
        with contextlib.suppress(StoreError):
            await self.store.pods.leave(self.endpoint)
