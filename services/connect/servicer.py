"""The gRPC ``Connections`` service: router and processor push frames to sockets held here.

The servicer only looks connections up in this pod's table and queues frames on them;
it never waits for a client to read (see :mod:`services.connect.session`). A
connection that is not here is a gRPC ``NOT_FOUND`` for ``Send``/``Disconnect`` (the
caller then deletes the stale record) and a ``not_found`` entry for ``SendMany``.
``SendToAudience`` takes every socket of a tenant (or of one user in it) from the
table's indexes — the per-pod fan-out of a publish, with no DynamoDB read.
"""

from __future__ import annotations

from typing import Final

import grpc
from grpc import aio

from services.connect.limits import valid_close_code
from services.connect.table import SocketTable
from streamer import protocol
from streamer.api.v1 import connections_pb2, connections_pb2_grpc

SERVICE_NAME: Final = connections_pb2.DESCRIPTOR.services_by_name["Connections"].full_name


async def _frame_text(frame: bytes, context: aio.ServicerContext) -> str:
    """The frame as text; INVALID_ARGUMENT unless it is non-empty UTF-8."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "frame must be non-empty UTF-8 JSON")
    return text


class ConnectionsServicer(connections_pb2_grpc.ConnectionsServicer):
    """Send, SendMany, SendToAudience and Disconnect over the local socket table."""

    def __init__(self, connections: SocketTable) -> None:
        self._connections = connections

    async def Send(
        self, request: connections_pb2.SendRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendResponse:
        text = await _frame_text(request.frame, context)
        conn = self._connections.get(request.connection_id)
        if conn is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "connection is not held by this pod")
        assert conn is not None
        return connections_pb2.SendResponse(delivered=conn.push_text(text))

    async def SendMany(
        self, request: connections_pb2.SendManyRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendManyResponse:
        text = await _frame_text(request.frame, context)
        out = connections_pb2.SendManyResponse()
        for cid in dict.fromkeys(request.connection_ids):  # unique, in order
            conn = self._connections.get(cid)
            if conn is None:
                out.not_found.append(cid)
            elif conn.push_text(text):
                out.delivered.append(cid)
            else:
                out.failed.append(cid)
        return out

    async def SendToAudience(
        self, request: connections_pb2.SendToAudienceRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendToAudienceResponse:
        if not request.tenant_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id is required")
        text = await _frame_text(request.frame, context)
        sockets = self._connections.audience(request.tenant_id, request.user_id or None)
        delivered = sum(1 for conn in sockets if conn.push_text(text))
        return connections_pb2.SendToAudienceResponse(
            matched=len(sockets), delivered=delivered, failed=len(sockets) - delivered
        )

    async def Disconnect(
        self, request: connections_pb2.DisconnectRequest, context: aio.ServicerContext
    ) -> connections_pb2.DisconnectResponse:
        code = request.code or protocol.CLOSE_NORMAL
        if not valid_close_code(code):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{code} is not a close code a server may send"
            )
        conn = self._connections.get(request.connection_id)
        if conn is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "connection is not held by this pod")
        assert conn is not None
        # Queued frames go out first: a final error message should reach the client.
        conn.close(code=code, reason=request.reason or "disconnected", why="disconnect", flush=True)
        return connections_pb2.DisconnectResponse(disconnected=True)
