"""Processors against DynamoDB Local streams, real SDK handler servers, real Delivery.

The handler server and the frame-capturing Connections server are shared by the
folder; every test gets fresh tables (its own stream, leases and requests) and
short timings (lease 2 s, claim 2 s, sweep 0.5 s) so take-overs happen in seconds.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from processor_helpers import (
    Broken,
    Calls,
    Capture,
    Chatty,
    Env,
    EnvFactory,
    Fast,
    Flaky,
    Huge,
    Never,
    Ordered,
    Quiet,
    Slow,
)

from streamer.config import load_settings
from streamer.registry.static import StaticRegistry
from streamer.sdk import Action, HandlerServer, registry_document
from streamer.store import Store
from streamer.store.dynamo import open_client
from streamer.store.tables import delete_tables, ensure_tables


@pytest.fixture(scope="package", autouse=True)
def local_credentials() -> Iterator[None]:
    """Dummy AWS credentials in the environment (DynamoDB Local accepts any).

    Without them every client start walks botocore's whole credential chain
    (~0.3 s each, two clients per processor), which dominated these tests' time.
    """
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    if not saved["AWS_ACCESS_KEY_ID"]:
        os.environ["AWS_ACCESS_KEY_ID"] = "local"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="package")
def calls() -> Calls:
    return Calls()


@pytest.fixture(scope="package")
async def handler(calls: Calls) -> AsyncIterator[tuple[str, list[Action], list[Action]]]:
    main: list[Action] = [
        Fast(calls),
        Chatty(calls),
        Slow(calls),
        Flaky(calls),
        Broken(calls),
        Never(calls),
        Huge(calls),
        Quiet(calls),
    ]
    single: list[Action] = [Ordered(calls)]
    server = HandlerServer(actions=[*main, *single], name="proc-test")
    port = await server.start(host="127.0.0.1", port=0)
    try:
        yield f"127.0.0.1:{port}", main, single
    finally:
        await server.stop(grace=0)


@pytest.fixture(scope="package")
async def capture() -> AsyncIterator[Capture]:
    cap = Capture()
    await cap.start()
    try:
        yield cap
    finally:
        await cap.stop()


@pytest.fixture(scope="package")
def registry(handler: tuple[str, list[Action], list[Action]]) -> StaticRegistry:
    """Two handler deployments on one server: ``proc-main`` and ``proc-single`` (concurrency 1)."""
    endpoint, main, single = handler
    single_doc = registry_document(single, name="proc-single", endpoint=endpoint)
    single_doc["spec"]["concurrency"] = 1
    return StaticRegistry([registry_document(main, name="proc-main", endpoint=endpoint), single_doc])


@pytest.fixture
async def make_env(
    dynamodb: str, registry: StaticRegistry, capture: Capture, calls: Calls
) -> AsyncIterator[EnvFactory]:
    """``await make_env(**settings_overrides)``: fresh tables and a place for processors."""
    envs: list[Env] = []
    stack = contextlib.AsyncExitStack()

    async def make(**overrides: Any) -> Env:
        values: dict[str, Any] = {
            "dynamodb_endpoint": dynamodb,
            "table_prefix": f"p{uuid.uuid4().hex[:10]}",
            "host": "127.0.0.1",
            "lease_seconds": 2.0,
            "claim_seconds": 2.0,
            "sweep_interval_seconds": 0.5,
            "pending_grace_seconds": 1.0,
            "progress_interval_seconds": 0.1,
            "poll_interval_seconds": 0.05,
            "drain_seconds": 1.0,
            "log_json": False,
        }
        values.update(overrides)
        settings = load_settings({}, **values)
        await ensure_tables(settings=settings)
        store = await stack.enter_async_context(Store.open(settings=settings))
        streams = await stack.enter_async_context(open_client("dynamodbstreams", settings=settings))
        env = Env(
            settings=settings, store=store, registry=registry, capture=capture, calls=calls, streams=streams
        )
        envs.append(env)
        return env

    try:
        yield make
    finally:
        for env in envs:
            for proc in env.processors:
                if proc.started:
                    await proc.stop(drain=0.5)
            await env.exits.aclose()
        await stack.aclose()
        for env in envs:
            # DynamoDB Local slows down as tables (and their streams) pile up.
            await delete_tables(settings=env.settings)


@pytest.fixture
async def env(make_env: EnvFactory) -> Env:
    return await make_env()
