"""The bare chain's gRPC hops: a router that only forwards, a handler that only answers.

Same libraries and contracts as Streamer (grpc.aio on uvloop, ``streamer.rpc``'s
server and channel options, ``Router.Route`` → ``Handler.Invoke`` server stream) but no
registry, no auth, no validation, no JSON: the payload bytes go through untouched and
come back as the one frame. This is the floor for Streamer's two hops.

``python -m bench.servers.bare_grpc --role handler`` or ``--role router --handler ADDR``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

from bench.child import emit, next_command, run_child, stdin_lines
from streamer import rpc
from streamer.api.v1 import handler_pb2, handler_pb2_grpc, router_pb2, router_pb2_grpc


class BareHandler(handler_pb2_grpc.HandlerServicer):
    async def Invoke(
        self, request: handler_pb2.InvokeRequest, context: Any
    ) -> AsyncIterator[handler_pb2.InvokeEvent]:
        yield handler_pb2.InvokeEvent(result=handler_pb2.Result(data=request.payload))


class BareRouter(router_pb2_grpc.RouterServicer):
    def __init__(self, handler: str) -> None:
        self.stub = handler_pb2_grpc.HandlerStub(rpc.channel(handler))

    async def Route(self, request: router_pb2.RouteRequest, context: Any) -> router_pb2.RouteResponse:
        frames = []
        async for event in self.stub.Invoke(handler_pb2.InvokeRequest(payload=request.payload)):
            if event.HasField("result"):
                frames.append(event.result.data)
        return router_pb2.RouteResponse(frames=frames)


async def main(args: argparse.Namespace) -> None:
    commands = await stdin_lines()
    server = rpc.create_server()
    if args.role == "handler":
        handler_pb2_grpc.add_HandlerServicer_to_server(BareHandler(), server)  # type: ignore[abstract]
    else:
        router_pb2_grpc.add_RouterServicer_to_server(BareRouter(args.handler), server)  # type: ignore[abstract]
    port = rpc.bind(server, host="127.0.0.1", port=0)
    await server.start()
    emit("ready", port=port)
    try:
        while (await next_command(commands, timeout=args.max_seconds)).get("cmd") != "stop":
            pass
    finally:
        await server.stop(1)


def cli() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--role", choices=["router", "handler"], required=True)
    p.add_argument("--handler", default="")
    p.add_argument("--max-seconds", type=float, default=900.0)
    args = p.parse_args()
    run_child(lambda: main(args), max_seconds=args.max_seconds)


if __name__ == "__main__":
    cli()
