"""``Submit``: a backend starts an async request on behalf of a user.

The request goes through the same checks as a client's (``Router.submit``: the
action, the principal's permissions, the payload's schema, the handler's
``Validate``) and is stored exactly like one sent on a WebSocket, except that it has
no connection of its own. Who hears about it:

- every connection the user has open **when it is submitted** gets the
  ``acknowledgment`` at once and is then subscribed to it (the subscriptions table,
  as ``$subscribe`` does), so the processor sends it progress and the outcome;
- a connection opened later finds it with ``$resume`` (it is the user's request,
  created within the look-back) or ``$status``/``$subscribe`` with its id.

The subscriptions are written after the request, then the request is marked
``subscribed`` and that write's answer read (the ``attach`` order of ``$subscribe``):
if it ended in between, its outcome is sent to the connections here, so a fast
request's result is never missed. The request is offered to a processor (direct
dispatch) only after that, so its first progress frames find the subscriptions (the
stream and the sweeper wait for the offer grace).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import grpc
from grpc import aio

from services.router.call import Call
from services.router.middleware import frame_outcome
from services.router.route import Router
from services.router.states import outcome_frame
from streamer.api.v1 import router_pb2
from streamer.callers import CallerPolicy
from streamer.delivery import PublishResult
from streamer.metrics import counter
from streamer.protocol import KnownServerMessage, ProtocolError, acknowledgment_message, encode_bytes
from streamer.store import RequestRecord, Store, StoreError

log = logging.getLogger(__name__)

SUBMITTED = counter(
    "streamer_router_submit_total",
    "Submit calls by outcome (the answer's frame type or error code).",
    ["outcome"],
)


class SenderLike(Protocol):
    """The part of :class:`streamer.delivery.Delivery` Submit uses."""

    async def send_many(self, connection_ids: Any, message: Any, *, final: bool = False) -> PublishResult: ...


class Submitter:
    """Serves ``Router.Submit`` with the router's pipeline, the store and delivery."""

    def __init__(self, *, router: Router, store: Store, delivery: SenderLike) -> None:
        self.router = router
        self.store = store
        self.delivery = delivery

    async def submit(self, call: Call) -> tuple[KnownServerMessage, int]:
        """The answer frame and the number of the user's connections attached."""
        ctx = await self.router.submit(call)
        frame = ctx.frames[0]
        attached = 0
        if ctx.record is not None:
            try:
                attached = await self._attach(ctx.record)
            except StoreError as exc:
                # The request is stored: it runs, and $resume/$status find it.
                log.warning("could not attach the user's connections: %s", exc)
            # Offered only now, so its first progress frames find the subscriptions
            # (a dedicated queue's own processors take it from their stream instead).
            if ctx.spec is None or not ctx.spec.queue_table:
                self.router.offers.submit(ctx.record)
        SUBMITTED.labels(outcome=frame_outcome(frame)).inc()
        log.info(
            "submitted",
            extra={
                "request_id": call.request_id,
                "action": call.action[:128],
                "outcome": frame_outcome(frame),
                "connections": attached,
            },
        )
        return frame, attached

    async def _attach(self, record: RequestRecord) -> int:
        connections = await self.store.connections.by_user(record.user_id, tenant_id=record.tenant_id)
        ids = [c.connection_id for c in connections]
        if not ids:
            return 0
        # The acknowledgment first: no progress can reach a connection before it is subscribed.
        await self.delivery.send_many(ids, acknowledgment_message(record.client_request_id))
        for cid in ids:
            await self.store.subscriptions.subscribe(
                request_id=record.request_id,
                connection_id=cid,
                user_id=record.user_id,
                tenant_id=record.tenant_id,
            )
        # The mark (the processor reads subscribers only of marked requests) is the re-read.
        fresh = await self.store.requests.mark_subscribed(record.request_id)
        if fresh is not None and fresh.terminal:
            await self.delivery.send_many(ids, outcome_frame(fresh), final=True)
        return len(ids)

    async def serve(
        self, request: router_pb2.SubmitRequest, context: aio.ServicerContext, *, gate: CallerPolicy
    ) -> router_pb2.SubmitResponse:
        """The gRPC method body: the caller policy for the principal's tenant first,
        INVALID_ARGUMENT without a user and tenant."""
        await gate.admit(context, "Submit", [request.principal.tenant_id])
        if not request.principal.user_id or not request.principal.tenant_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "principal.user_id and tenant_id are required"
            )
        if not request.action:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "action is required")
        try:
            call = Call.from_pb(request, deadline=context.time_remaining())
        except ProtocolError as exc:
            message = exc.to_message()
            return router_pb2.SubmitResponse(
                request_id=str(message.get("request_id") or request.request_id), frame=encode_bytes(message)
            )
        frame, attached = await self.submit(call)
        return router_pb2.SubmitResponse(
            request_id=call.request_id, frame=encode_bytes(frame), connections=attached
        )
