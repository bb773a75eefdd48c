"""The gRPC ``Router`` service: decodes calls and hands them to :class:`Router`, :class:`Publisher`
and :class:`Submitter`."""

from __future__ import annotations

from grpc import aio

from services.router.call import Call
from services.router.publish import Publisher
from services.router.route import Router
from services.router.submit import Submitter
from streamer.api.v1 import router_pb2, router_pb2_grpc
from streamer.callers import CallerPolicy
from streamer.protocol import ProtocolError, encode_bytes

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(
        self, *, router: Router, publisher: Publisher, submitter: Submitter, gate: CallerPolicy | None = None
    ) -> None:
        self.router = router
        self.publisher = publisher
        self.submitter = submitter
        self.gate = gate or CallerPolicy(rules=None)

    async def Route(
        self, request: router_pb2.RouteRequest, context: aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        if self.gate.enforced:  # a user's principal only from a caller granted Route (connect)
            await self.gate.admit(context, "Route", [request.principal.tenant_id])
        try:
            call = Call.from_pb(request, deadline=context.time_remaining())
        except ProtocolError as exc:
            return router_pb2.RouteResponse(frames=[encode_bytes(exc.to_message())])
        frames = await self.router.route(call)
        return router_pb2.RouteResponse(frames=[encode_bytes(f) for f in frames])

    async def Publish(
        self, request: router_pb2.PublishRequest, context: aio.ServicerContext
    ) -> router_pb2.PublishResponse:
        return await self.publisher.serve(request, context, gate=self.gate)

    async def Submit(
        self, request: router_pb2.SubmitRequest, context: aio.ServicerContext
    ) -> router_pb2.SubmitResponse:
        return await self.submitter.serve(request, context, gate=self.gate)
