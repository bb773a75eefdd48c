"""``Processor.Offer``: the router hands a new request straight to this processor.

The offer is a shortcut past the stream, never a second source of truth: the
request is already stored PENDING, and this servicer claims it through the same
:meth:`~services.processor.claims.Claimer.offer` the stream reader and the sweeper
use (one conditional update, exactly one winner per attempt). Whatever it does not
claim — saturated lane, draining, store trouble — the stream reader claims after
the offer grace (``offer_until`` on the item), and the sweeper after that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import grpc
from grpc import aio

from services.processor import metrics
from services.processor.claims import Candidate, Claimer
from services.processor.dispatch import Dispatcher
from streamer.api.v1 import processor_pb2, processor_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME: Final = processor_pb2.DESCRIPTOR.services_by_name["Processor"].full_name
_Outcome = processor_pb2.OfferResponse.Outcome


class OfferServicer(processor_pb2_grpc.ProcessorServicer):
    """Claims offered requests at once, or refuses them when it should not take more."""

    def __init__(
        self,
        *,
        claimer: Claimer,
        dispatcher: Dispatcher,
        accepting: Callable[[], bool],
        capacity: int,
    ) -> None:
        self.claimer = claimer
        self.dispatcher = dispatcher
        self.accepting = accepting
        self.capacity = capacity
        #: Offers between their saturation check and their claim's end, per lane: counted
        #: with the lane's load, so a burst of offers cannot all pass the check at once.
        self._claiming: dict[str, int] = {}

    def _answer(self, outcome: int) -> processor_pb2.OfferResponse:
        name = _Outcome.Name(outcome).lower()  # type: ignore[arg-type]
        metrics.OFFERS.labels(name).inc()
        return processor_pb2.OfferResponse(
            accepted=outcome == _Outcome.ACCEPTED,
            outcome=outcome,  # type: ignore[arg-type]
            load=self.dispatcher.running + self.dispatcher.backlog,
            capacity=self.capacity,
        )

    async def Offer(
        self, request: processor_pb2.OfferRequest, context: aio.ServicerContext
    ) -> processor_pb2.OfferResponse:
        if not request.request_id or request.attempt < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id and attempt >= 1 are required")
        if not self.accepting() or not self.claimer.accepting:
            return self._answer(_Outcome.DRAINING)
        lane, load, limit = self.dispatcher.lane_load(request.action)
        claiming = self._claiming.get(lane, 0)
        if load + claiming >= limit:
            return self._answer(_Outcome.SATURATED)
        self._claiming[lane] = claiming + 1
        try:
            won = await self.claimer.offer(
                Candidate(
                    request_id=request.request_id,
                    attempt=request.attempt,
                    source="offer",
                    action=request.action or None,
                    tenant=request.tenant_id or None,
                )
            )
        finally:
            left = self._claiming[lane] - 1
            if left:
                self._claiming[lane] = left
            else:
                del self._claiming[lane]
        return self._answer(_Outcome.ACCEPTED if won else _Outcome.NOT_CLAIMED)
