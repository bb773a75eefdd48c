"""A real router over gRPC, real handler servers built with the SDK, and DynamoDB Local.

The tables, the handler servers and the router are shared by this folder's tests (a
table set costs about a second to create); every test uses its own user, tenant and
request ids, so tests never see each other's items.
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import yaml
from router_helpers import (
    ActionsUnderTest,
    AtThreshold,
    Checked,
    Counter,
    Failing,
    OverThreshold,
    Route,
    Secret,
    Sleepy,
    route_request,
)

from examples.handlers import handlers
from services.router.service import RouterService
from streamer import rpc
from streamer.api.v1 import router_pb2_grpc
from streamer.config import Settings, load_settings
from streamer.local.ports import free_port
from streamer.registry.file import FileRegistry
from streamer.sdk import HandlerServer
from streamer.store import Store
from streamer.store.tables import ensure_tables


@pytest.fixture(scope="package")
async def router_settings(dynamodb: str) -> Settings:
    s = load_settings(
        {},
        dynamodb_endpoint=dynamodb,
        table_prefix=f"r{uuid.uuid4().hex[:10]}",
        host="127.0.0.1",
        drain_seconds=1.0,
    )
    await ensure_tables(settings=s)
    return s


@pytest.fixture(scope="package")
async def router_store(router_settings: Settings) -> AsyncIterator[Store]:
    async with Store.open(settings=router_settings) as st:
        yield st


@pytest.fixture(scope="package")
def test_actions() -> ActionsUnderTest:
    return ActionsUnderTest(counter=Counter(), sleepy=Sleepy())


@pytest.fixture(scope="package")
async def handler_endpoint(test_actions: ActionsUnderTest) -> AsyncIterator[tuple[str, HandlerServer]]:
    """One SDK server with the examples and the test actions; examples run without pauses."""
    old = os.environ.get("STREAMER_EXAMPLES_STEP_SECONDS")
    os.environ["STREAMER_EXAMPLES_STEP_SECONDS"] = "0"
    server = HandlerServer(
        actions=[
            *handlers(),
            test_actions.counter,
            test_actions.sleepy,
            AtThreshold(),
            OverThreshold(),
            Secret(),
            Failing(),
            Checked(),
        ],
        name="examples",
    )
    port = await server.start(host="127.0.0.1", port=0)
    yield f"127.0.0.1:{port}", server
    await server.stop(grace=0)
    if old is None:
        os.environ.pop("STREAMER_EXAMPLES_STEP_SECONDS", None)
    else:
        os.environ["STREAMER_EXAMPLES_STEP_SECONDS"] = old


@pytest.fixture(scope="package")
def registry_path(
    tmp_path_factory: pytest.TempPathFactory, handler_endpoint: tuple[str, HandlerServer]
) -> pathlib.Path:
    endpoint, server = handler_endpoint
    examples = server.registry_document(endpoint=endpoint)
    for spec in examples["spec"]["actions"]:
        if spec["name"] == "t_sleep":
            spec["timeout"] = "300ms"  # the router's deadline, far below the handler's own 30 s
    down_port = free_port("127.0.0.1")  # nothing listens there
    gone = {
        "apiVersion": "streamer.dev/v1alpha1",
        "kind": "StreamerHandler",
        "metadata": {"name": "gone"},
        "spec": {
            "actions": [
                {"name": "gone_sync", "mode": "sync", "timeout": "5s"},
                {"name": "gone_async", "mode": "async", "timeout": "5s"},
            ]
        },
        "status": {"endpoint": f"127.0.0.1:{down_port}"},
    }
    path = tmp_path_factory.mktemp("registry") / "registry.yaml"
    path.write_text(yaml.safe_dump_all([examples, gone]))
    return path


@pytest.fixture(scope="package")
async def router_service(
    router_settings: Settings, registry_path: pathlib.Path, router_store: Store
) -> AsyncIterator[RouterService]:
    service = RouterService(
        settings=router_settings,
        registry=FileRegistry(str(registry_path), poll_interval=0),
        host="127.0.0.1",
        port=0,
        http_port=0,
    )
    await service.start()
    yield service
    await service.stop(grace=0)


@pytest.fixture(scope="package")
async def router_stub(router_service: RouterService) -> AsyncIterator[Any]:
    channel = rpc.channel(f"127.0.0.1:{router_service.port}")
    yield router_pb2_grpc.RouterStub(channel)
    await channel.close(None)


@pytest.fixture
def route(router_stub: Any) -> Route:
    """``await route(action, user=..., tenant=..., ...)`` → the answered frames as dicts."""

    async def call(action: str, **kwargs: Any) -> list[dict[str, Any]]:
        kwargs.setdefault("request_id", f"req-{uuid.uuid4().hex[:12]}")
        answer = await router_stub.Route(route_request(action, **kwargs), timeout=10)
        return [json.loads(frame) for frame in answer.frames]

    return call


@pytest.fixture
def ids() -> Callable[[str], str]:
    """Fresh ids per test: ``ids("user")`` → ``user-<random>``."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make
