"""The processor, wired: the stream, direct offers and the sweeper feed one request path.

::

    stream shard ─▶ ShardReader (coordinator.py) ─▶ RequestPath.on_records ─┐
    Processor.Offer (offers.py) ─────────────────────────────────────────────┼─▶ claim ─▶ bulkhead ─▶ handler
    Sweeper (sweeper.py) ────────────────────────────────────────────────────┘   (path.py)

This module only builds the parts, connects them and orders start and shutdown;
what happens to a request is in :mod:`services.processor.path`.

Shutdown (:meth:`Processor.stop`, on SIGTERM): stop claiming, stop the readers
(each finishes its batch and checkpoints) and *release* the leases so another
replica reads on at once; hand every queued-but-not-started request straight back
(``release``: PENDING, same attempt — its stream record lets the next lease holder
claim it); let running handlers finish for up to ``drain_seconds`` while their
claims are still renewed; then cancel the rest and hand them back the same way.
A processor that dies instead (SIGKILL, OOM, node loss) writes nothing: its
leases expire after ``lease_seconds`` and are taken over, its claims expire after
``claim_seconds`` and the sweepers release them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from services.processor.backlog import BacklogMeter
from services.processor.fanout import Fanout, Sender
from services.processor.membership import Membership
from services.processor.offers import SERVICE_NAME, OfferServicer
from services.processor.path import RequestPath
from services.processor.stream import LeaseCoordinator, PollPolicy
from services.processor.sweeper import Sweeper
from streamer import rpc
from streamer.api.v1 import processor_pb2_grpc
from streamer.config import Settings
from streamer.handler_client import HandlerClient
from streamer.metrics import Health, start_http
from streamer.registry import Registry
from streamer.retry import Backoff
from streamer.store import Store
from streamer.store.dynamo import open_client
from streamer.store.leases import TRIM_HORIZON
from streamer.store.tables import requests_stream_arn

log = logging.getLogger(__name__)


def default_worker_id(settings: Settings) -> str:
    """``STREAMER_WORKER_ID``, else host-pid plus a short random suffix.

    The suffix keeps two processors apart when pids repeat (every container is
    pid 1) or two run in one process (tests); a restart is a new worker anyway.
    """
    if settings.worker_id:
        return settings.worker_id
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Processor:
    """One processor replica. ``await start()``, then ``await stop()`` (or ``abort()`` in tests)."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: Registry,
        worker_id: str | None = None,
        store: Store | None = None,
        streams_client: Any = None,
        delivery: Sender | None = None,
        health: Health | None = None,
        backoff: Backoff | None = None,
        poll: PollPolicy | None = None,
        initial_position: str = TRIM_HORIZON,
        grpc_port: int | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.worker_id = worker_id or default_worker_id(settings)
        self.health = health or Health()
        self.backoff = backoff or Backoff(base=settings.retry_base_seconds, cap=settings.retry_max_seconds)
        self.poll = poll
        self.initial_position = initial_position
        self._store = store
        self._streams = streams_client
        self._delivery = delivery
        self._owned_delivery: Any = None
        self._stack = contextlib.AsyncExitStack()
        self.stream_arn = ""
        self.path: RequestPath | None = None
        #: Port of the ``Processor`` gRPC service (direct dispatch); None: not served.
        self.grpc_port = grpc_port
        self._server: rpc.aio.Server | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._stack.__aenter__()
        if self._store is None:
            self._store = await self._stack.enter_async_context(Store.open(settings=self.settings))
        if self._streams is None:
            self._streams = await self._stack.enter_async_context(
                open_client("dynamodbstreams", settings=self.settings)
            )
        if self._delivery is None:
            from streamer.delivery import Delivery

            self._owned_delivery = Delivery(store=self._store, settings=self.settings)
            self._delivery = self._owned_delivery
        store = self._store
        self.stream_arn = await requests_stream_arn(store.client, settings=self.settings)

        self.fanout = Fanout(sender=self._delivery, subscriptions=store.subscriptions)
        self.handlers = HandlerClient(max_message_bytes=self.settings.grpc_max_message_bytes)
        self.membership = Membership(
            leases=store.leases,
            worker_id=self.worker_id,
            lease_seconds=self.settings.lease_seconds,
            enabled=self.settings.handler_concurrency_scope == "cluster",
        )
        await self.membership.start()
        self.path = RequestPath(
            store=store,
            registry=self.registry,
            fanout=self.fanout,
            settings=self.settings,
            worker_id=self.worker_id,
            backoff=self.backoff,
            handlers=self.handlers,
            share=self.membership.share,
        )
        self.claimer, self.keeper = self.path.claimer, self.path.keeper
        self.dispatcher, self.invoker = self.path.dispatcher, self.path.invoker
        self.sweeper = Sweeper(
            requests=store.requests,
            claimer=self.claimer,
            interval=self.settings.sweep_interval_seconds,
            pending_grace=self.settings.pending_grace_seconds,
            clock_skew=self.settings.clock_skew_seconds,
        )
        self.coordinator = LeaseCoordinator(
            client=self._streams,
            leases=store.leases,
            stream_arn=self.stream_arn,
            worker_id=self.worker_id,
            settings=self.settings,
            on_records=self.path.on_records,
            poll=self.poll,
            initial_position=self.initial_position,
        )
        self.backlog = BacklogMeter(
            requests=store.requests,
            jobs=lambda: self.keeper.jobs.values(),
            interval=self.settings.backlog_interval_seconds,
            leader=self._measures_backlog,
        )
        self.path.start()
        await self.coordinator.start()
        self.sweeper.start()
        self.backlog.start()
        if self.grpc_port is not None:
            await self._serve_offers(self.grpc_port)
        self.health.set_ready()
        log.info("processor started", extra={"worker_id": self.worker_id, "stream": self.stream_arn})

    def _measures_backlog(self) -> bool:
        """Whether this processor measures the queue's backlog: it holds the stream's first
        live lease (by key), or nobody holds one (services.processor.backlog)."""
        live = [lease for lease in self.coordinator.seen if not lease.expired() and not lease.finished]
        if not live:
            return True
        return min(live, key=lambda lease: lease.lease_key).owner == self.worker_id

    async def _serve_offers(self, port: int) -> None:
        server = rpc.create_server(max_message_bytes=self.settings.grpc_max_message_bytes)
        servicer = OfferServicer(
            claimer=self.claimer,
            dispatcher=self.dispatcher,
            accepting=lambda: self.started,
            capacity=self.settings.handler_concurrency,
        )
        processor_pb2_grpc.add_ProcessorServicer_to_server(servicer, server)
        health = rpc.finish_server(server, service_names=[SERVICE_NAME])
        self.grpc_port = rpc.bind(server, host=self.settings.host, port=port)
        await server.start()
        await rpc.set_serving(health, service_names=[SERVICE_NAME], serving=True)
        self._server = server

    async def _stop_offers(self, grace: float | None) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)

    async def stop(self, *, drain: float | None = None) -> None:
        """Graceful stop (see the module docstring); ``drain`` defaults to ``drain_seconds``."""
        if not self.started:
            await self._stack.aclose()
            return
        assert self.path is not None
        self.path.stop_accepting()  # from here on a won claim is handed straight back
        drain = self.settings.drain_seconds if drain is None else drain
        self.health.set_not_ready("draining")
        log.info("processor draining", extra={"drain_seconds": drain})
        await self._stop_offers(1.0)  # offers now answer DRAINING; stop listening
        await self.backlog.stop()
        await self.sweeper.stop()
        await self.coordinator.stop(release=True)
        await self.path.drain(drain)
        await self.membership.stop(leave=True)
        await self._close()
        log.info("processor stopped", extra={"worker_id": self.worker_id})

    async def abort(self) -> None:
        """Stop at once with no writes at all — what a killed process leaves behind (tests)."""
        assert self.path is not None
        self.path.stop_claiming()
        await self._stop_offers(None)
        await self.backlog.stop()
        self.sweeper.abort()
        await self.coordinator.abort()
        await self.path.abort()
        await self.membership.stop(leave=False)
        await self._close()

    async def _close(self) -> None:
        await self._stop_offers(None)
        await self.handlers.close()
        if self._owned_delivery is not None:
            await self._owned_delivery.close()
        await self._stack.aclose()

    # ------------------------------------------------------------------ introspection

    @property
    def started(self) -> bool:
        """Running and accepting work (False before start and once shutdown began)."""
        return self.path is not None and self.path.accepting

    @property
    def store(self) -> Store:
        assert self._store is not None
        return self._store

    def stats(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "leases": sorted(self.coordinator.readers),
            "queued": self.dispatcher.queued,
            "running": self.dispatcher.running,
            "claims_held": len(self.keeper.jobs),
            "scheduled": self.claimer.scheduled,
            "swept_released": self.sweeper.released_total,
            "swept_claimed": self.sweeper.claimed_total,
            "time": time.time(),
        }


class ProcessorService:
    """The processor process: /metrics /healthz /readyz, the registry, one :class:`Processor`.

    ``stop()`` marks it not ready, then drains the processor (leases released,
    running handlers finish for ``STREAMER_DRAIN_SECONDS``, the rest handed back).
    """

    def __init__(self, *, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.health = Health()
        self.processor: Processor | None = None
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        runner, port = await start_http(
            health=self.health, host=self.settings.host, port=self.settings.http_port
        )
        self._stack.push_async_callback(runner.cleanup)
        log.info("observability endpoints up", extra={"http_port": port})
        await self.registry.start()
        self._stack.push_async_callback(self.registry.stop)
        self.processor = Processor(
            settings=self.settings,
            registry=self.registry,
            health=self.health,
            grpc_port=self.settings.grpc_port,
        )
        await self.processor.start()

    async def stop(self) -> None:
        self.health.set_not_ready("stopping")
        if self.processor is not None:
            await self.processor.stop()
        await self._stack.aclose()
