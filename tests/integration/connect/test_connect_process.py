"""``python -m services.connect`` as a real process: SIGTERM drain and configuration errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from connect_helpers import ConnectProcess, open_ws, receive_close

from services.connect.main import run
from streamer import protocol
from streamer.store import Store


async def test_sigterm_drains_closes_with_1001_and_removes_records(
    spawn_connect: Callable[..., Awaitable[ConnectProcess]],
    tenant: str,
    store: Store,
    http: aiohttp.ClientSession,
) -> None:
    proc = await spawn_connect(STREAMER_DRAIN_SECONDS="5")
    clients = [await open_ws(http, proc.ws_port, tenant=tenant, user=f"u{i}") for i in range(3)]
    records = await store.connections.by_tenant(tenant)
    assert len(records) == 3
    assert {r.endpoint for r in records} == {proc.endpoint}

    proc.terminate()
    for ws in clients:
        code, reason = await receive_close(ws, timeout=10)
        assert code == protocol.CLOSE_GOING_AWAY and reason.startswith("server shutting down")
        assert protocol.reconnect_hint(reason) is not None  # when to come back (spread over the drain)
    assert await proc.wait(timeout=10) == 0
    assert await store.connections.by_tenant(tenant) == []
    for record in records:
        assert await store.connections.get(record.connection_id) is None
    messages = [entry.get("message") for entry in proc.log_entries()]
    assert "draining" in messages
    assert "connect stopped" in messages
    # Every log line written for a connection carries its id.
    for entry in proc.log_entries():
        if entry.get("message") in ("connected", "disconnected"):
            assert entry["connection_id"] in {r.connection_id for r in records}


def test_bad_configuration_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_JWT_SECRET", "x" * 40)
    monkeypatch.setenv("STREAMER_WS_RATE_LIMIT", "lots")
    assert run(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "STREAMER_WS_RATE_LIMIT" in err
    assert "lots" in err


def test_no_token_key_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("STREAMER_JWT_SECRET", "STREAMER_JWT_PUBLIC_KEY", "STREAMER_JWKS_URL", "STREAMER_JWKS_URLS"):
        monkeypatch.delenv(name, raising=False)
    assert run([]) == 2
    assert "STREAMER_JWT_SECRET" in capsys.readouterr().err


def test_a_bad_flag_value_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMER_JWT_SECRET", "x" * 40)
    assert run(["--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
