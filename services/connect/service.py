"""One connect pod, wired: :class:`ConnectService` builds the parts and runs their lifecycle.

The parts, each in its own module:

- :mod:`~services.connect.servers` — the gRPC ``Connections`` server, the WebSocket port
  (``/ws``, ``/healthz``, ``/readyz``) and the internal HTTP port (``/metrics``);
- :mod:`~services.connect.upgrade` — authenticate, write the record, accept, run a socket;
- :mod:`~services.connect.frames` — the policy for each client frame, then dispatch;
- :mod:`~services.connect.routing` — one ``Route`` call per message, its answer sent back;
- :mod:`~services.connect.records` — this pod's connection records in DynamoDB;
- :mod:`~services.connect.heartbeat` — one ping schedule for every socket;
- :mod:`~services.connect.table` — the sockets held here, by id, tenant and user (what
  ``Connections`` reaches);
- :mod:`~services.connect.presence` — this pod's entry in the connect pods directory
  (how a publish to a tenant finds every pod);
- :mod:`~services.connect.drain` — closing every socket with a spread reconnect hint.

Tests start it in-process; :mod:`services.connect.main` runs it as ``streamer connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.connect.drain import close_sockets, drain_budget
from services.connect.frames import FrameHandler
from services.connect.heartbeat import HeartbeatSchedule
from services.connect.limits import FramePolicy
from services.connect.presence import Presence
from services.connect.records import ConnectionRecords
from services.connect.router_client import RouterClient
from services.connect.routing import Routing
from services.connect.servers import Servers
from services.connect.servicer import ConnectionsServicer
from services.connect.table import SocketTable
from services.connect.upgrade import Upgrade
from streamer.auth import TokenVerifier
from streamer.config import Settings
from streamer.metrics import Health
from streamer.store import Store

log = logging.getLogger(__name__)


class ConnectService:
    """One connect pod. ``await start()``, then ``await stop()`` (which drains first)."""

    def __init__(
        self, *, settings: Settings, verifier: TokenVerifier | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.health = Health()
        self.connections = SocketTable()
        self.frame_policy = FramePolicy(limit=settings.ws_max_frame_bytes)
        self.heartbeats = HeartbeatSchedule(
            interval=settings.ws_heartbeat_seconds, missed_pongs=settings.ws_missed_pongs
        )
        self.servers = Servers(settings=settings, health=self.health)
        self.draining = False
        self._verifier = verifier
        self._store = store
        self._stack = contextlib.AsyncExitStack()
        self._router: RouterClient | None = None
        self._records: ConnectionRecords | None = None
        self._upgrade: Upgrade | None = None
        self._presence: Presence | None = None
        self._drained = False
        self._stopped = False

    @property
    def store(self) -> Store:
        assert self._store is not None, "start() first"
        return self._store

    @property
    def verifier(self) -> TokenVerifier:
        assert self._verifier is not None, "start() first"
        return self._verifier

    @property
    def ws_port(self) -> int:
        return self.servers.ws_port

    @property
    def grpc_port(self) -> int:
        return self.servers.grpc_port

    @property
    def http_port(self) -> int:
        return self.servers.http_port

    @property
    def endpoint(self) -> str:
        return self.servers.endpoint

    async def start(self) -> None:
        s = self.settings
        if self._verifier is None:
            self._verifier = TokenVerifier.from_settings(s)  # ConfigError for a missing key
        if self._store is None:
            self._store = await self._stack.enter_async_context(Store.open(settings=s))

        endpoint = await self.servers.start_grpc(ConnectionsServicer(self.connections))
        self._router = RouterClient(
            address=s.router_address,
            timeout=s.ws_route_timeout_seconds,
            endpoint=endpoint,
            max_message_bytes=s.grpc_max_message_bytes,
        )
        self._records = ConnectionRecords(
            store=self.store, endpoint=endpoint, touch_seconds=s.ws_touch_seconds
        )
        frames = FrameHandler(
            policy=self.frame_policy,
            dispatch=Routing(self._router).dispatch,
            seen=self._records.maybe_touch,
            max_frame_bytes=s.ws_max_frame_bytes,
        )
        self._upgrade = Upgrade(
            settings=s,
            verifier=self.verifier,
            records=self._records,
            table=self.connections,
            heartbeats=self.heartbeats,
            frames=frames,
            policy=self.frame_policy,
            draining=lambda: self.draining,
        )
        # Listed before the first socket can be accepted (a publish must find every socket).
        self._presence = Presence(store=self.store, endpoint=endpoint)
        await self._presence.start()
        await self.servers.start_web(self._upgrade.handle)
        self.heartbeats.start()
        self.health.checks.append(self._dynamodb_ready)
        self.health.set_ready()
        await self.servers.set_serving(True)
        log.info(
            "connect ready",
            extra={
                "ws_port": self.ws_port,
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "endpoint": self.endpoint,
            },
        )

    async def drain(self, *, timeout: float | None = None) -> None:
        """Not ready, stop accepting, close every socket (1001, with a reconnect hint:
        :mod:`~services.connect.drain`), delete their records.

        Returns within ``timeout`` (default: most of ``drain_seconds``, keeping the rest
        for :meth:`stop`'s own cleanup). gRPC keeps serving meanwhile, so progress for
        a closing socket still finds it until the socket is gone.
        """
        if self._drained:
            return
        self._drained = True
        s = self.settings
        budget = timeout if timeout is not None else drain_budget(s.drain_seconds)
        deadline = asyncio.get_running_loop().time() + budget
        self.draining = True
        self.health.set_not_ready("draining")
        await self.servers.set_serving(False)
        await self.servers.stop_accepting()
        records = self._records
        await close_sockets(
            list(self.connections.values()),
            handlers=self._upgrade.handlers if self._upgrade is not None else (),
            leftovers=lambda: records.registered if records is not None else (),
            forget=records.forget if records is not None else _nothing,
            rate=s.ws_reconnect_rate,
            cap=s.ws_reconnect_max_seconds,
            deadline=deadline,
        )

    async def stop(self) -> None:
        """Drain (if not done yet), then stop every server and close every client."""
        if self._stopped:
            return
        self._stopped = True
        await self.drain()
        await self.heartbeats.stop()
        if self._presence is not None:
            await self._presence.stop()
        await self.servers.stop()
        if self._router is not None:
            await self._router.close()
        if self._verifier is not None:
            await self._verifier.close()
        await self._stack.aclose()

    async def _dynamodb_ready(self) -> bool:
        await asyncio.wait_for(
            self.store.client.describe_table(TableName=self.store.connections.table), timeout=2.0
        )
        return True


async def _nothing(_: str) -> None:
    return None
