"""The router and the example handlers as real processes: start, answer, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import sys
from typing import Any

import aiohttp
import yaml
from router_helpers import route_request

from examples.handlers import handlers
from examples.handlers.main import registry_yaml
from streamer import rpc
from streamer.api.v1 import handler_pb2, handler_pb2_grpc, router_pb2_grpc
from streamer.config import Settings
from streamer.local.ports import free_port

ROOT = pathlib.Path(__file__).resolve().parents[3]


async def spawn(*args: str, env: dict[str, str], log: pathlib.Path) -> asyncio.subprocess.Process:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    full_env.update(env)
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT, env=full_env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )


def _text(path: pathlib.Path) -> str:
    return path.read_text() if path.exists() else ""


async def ready(
    http_port: int, proc: asyncio.subprocess.Process, log: pathlib.Path, timeout: float = 30
) -> None:
    async def poll() -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                assert proc.returncode is None, _text(log)
                try:
                    async with http.get(f"http://127.0.0.1:{http_port}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 20)


async def test_router_and_example_handlers_as_processes(
    router_settings: Settings, tmp_path: pathlib.Path
) -> None:
    handler_port, handler_http, router_port, router_http = (free_port() for _ in range(4))
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(f"127.0.0.1:{handler_port}"))
    base = {"STREAMER_HOST": "127.0.0.1", "STREAMER_LOG_JSON": "true", "STREAMER_DRAIN_SECONDS": "2"}
    handler = await spawn(
        "-m",
        "examples.handlers.main",
        "--port",
        str(handler_port),
        "--http-port",
        str(handler_http),
        env={**base, "STREAMER_EXAMPLES_STEP_SECONDS": "0"},
        log=tmp_path / "handler.log",
    )
    router = await spawn(
        "-m",
        "services.router",
        "--port",
        str(router_port),
        "--http-port",
        str(router_http),
        "--registry",
        str(registry),
        env={
            **base,
            "STREAMER_DYNAMODB_ENDPOINT": router_settings.dynamodb_endpoint or "",
            "STREAMER_TABLE_PREFIX": router_settings.table_prefix,
        },
        log=tmp_path / "router.log",
    )
    try:
        await ready(handler_http, handler, tmp_path / "handler.log")
        await ready(router_http, router, tmp_path / "router.log")
        channel = rpc.channel(f"127.0.0.1:{router_port}")
        try:
            stub = router_pb2_grpc.RouterStub(channel)
            answer = await stub.Route(
                route_request("echo", request_id="p-1", user="u", tenant="t", payload={"message": "Hello"}),
                timeout=10,
            )
            frame: dict[str, Any] = json.loads(answer.frames[0])
            assert frame["type"] == "response" and frame["data"]["message"] == "Hello"
        finally:
            await channel.close(None)
        hchannel = rpc.channel(f"127.0.0.1:{handler_port}")
        try:
            described = await handler_pb2_grpc.HandlerStub(hchannel).Describe(
                handler_pb2.DescribeRequest(), timeout=5
            )
            assert described.handler == "examples" and len(described.actions) == len(handlers())
        finally:
            await hchannel.close(None)
    finally:
        codes = [await stop(router), await stop(handler)]
    assert codes == [0, 0], (tmp_path / "router.log").read_text() + (tmp_path / "handler.log").read_text()


async def test_router_refuses_to_start_with_a_broken_registry(tmp_path: pathlib.Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"kind": "StreamerHandler", "metadata": {"name": "x"}, "spec": {}}))
    proc = await spawn(
        "-m",
        "services.router",
        "--port",
        "0",
        "--http-port",
        "0",
        "--registry",
        str(registry),
        env={"STREAMER_HOST": "127.0.0.1", "STREAMER_DYNAMODB_ENDPOINT": "http://127.0.0.1:9"},
        log=tmp_path / "router.log",
    )
    assert await asyncio.wait_for(proc.wait(), 30) != 0
    assert "spec.actions" in (tmp_path / "router.log").read_text()
