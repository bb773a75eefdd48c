"""Fixtures for the connect service: a real service (in-process or as a process), a small
in-test Router servicer, and WebSocket clients over real sockets, all on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import pathlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from connect_helpers import SECRET, ConnectProcess, FakeRouter, StartConnect, process_env

from services.connect.service import ConnectService
from streamer import rpc
from streamer.api.v1 import router_pb2_grpc
from streamer.config import Settings, load_settings
from streamer.store import Store
from streamer.store.tables import ensure_tables


@pytest.fixture(scope="session")
async def module_settings(dynamodb: str) -> Settings:
    """One set of tables for every connect test: creating tables costs ~1-2 s on DynamoDB Local.

    Tests stay isolated through the ``tenant`` fixture (a fresh tenant id per test).
    """
    s = load_settings({}, dynamodb_endpoint=dynamodb, table_prefix=f"c{uuid.uuid4().hex[:10]}", log_json=True)
    await ensure_tables(settings=s)
    return s


@pytest.fixture
def settings(module_settings: Settings) -> Settings:
    """Overrides the per-test tables of tests/conftest.py with the shared ones."""
    return module_settings


@pytest.fixture(scope="session")
async def module_store(module_settings: Settings) -> AsyncIterator[Store]:
    """One DynamoDB client for these tests (creating an aiobotocore client costs ~0.3 s)."""
    async with Store.open(settings=module_settings) as st:
        yield st


@pytest.fixture
def store(module_store: Store) -> Store:
    """Overrides tests/conftest.py's per-test store with the shared one."""
    return module_store


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def router() -> AsyncIterator[tuple[FakeRouter, str]]:
    """(servicer, address) of a Router gRPC server on a free loopback port."""
    servicer = FakeRouter()
    server = rpc.create_server()
    router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
    port = rpc.bind(server, host="127.0.0.1", port=0)
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    servicer.release.set()
    await server.stop(grace=None)


@pytest.fixture
def connect_settings(settings: Settings, router: tuple[FakeRouter, str]) -> Settings:
    """Settings for an in-process connect service: loopback, free ports, the fake router."""
    return dataclasses.replace(
        settings,
        host="127.0.0.1",
        ws_port=0,
        grpc_port=0,
        http_port=0,
        router_address=router[1],
        jwt_secret=SECRET,
        ws_route_timeout_seconds=5.0,
        drain_seconds=5.0,
    )


@pytest.fixture
async def start_connect(connect_settings: Settings, module_store: Store) -> AsyncIterator[StartConnect]:
    """Start an in-process ConnectService; keyword arguments override settings."""
    started: list[ConnectService] = []

    async def start(**overrides: Any) -> ConnectService:
        service = ConnectService(
            settings=dataclasses.replace(connect_settings, **overrides), store=module_store
        )
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def connect(start_connect: StartConnect) -> ConnectService:
    """One connect service with the default settings of these tests."""
    return await start_connect()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def spawn_connect(
    connect_settings: Settings, tmp_path: pathlib.Path
) -> AsyncIterator[Callable[..., Awaitable[ConnectProcess]]]:
    """Start connect processes (keyword arguments are extra environment variables)."""
    procs: list[ConnectProcess] = []

    async def spawn(**extra: str) -> ConnectProcess:
        proc = ConnectProcess(process_env(connect_settings, **extra), tmp_path / f"connect-{len(procs)}.log")
        procs.append(proc)
        return await proc.start()

    yield spawn
    running = [p for p in procs if p.proc is not None and p.proc.poll() is None]
    for proc in running:
        proc.terminate()
    for proc in running:
        try:
            await proc.wait(timeout=10)
        except AssertionError:
            proc.kill()
