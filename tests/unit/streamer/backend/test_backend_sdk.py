"""The backend SDK's argument checks and error mapping (the calls themselves are in
tests/e2e/test_e2e_backends.py, against the real stack)."""

from __future__ import annotations

import grpc
import pytest

from streamer.backend import AsyncBackend, Submitted
from streamer.backend.client import _target, grpc_error
from streamer.client import (
    ForbiddenError,
    InternalError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from streamer.config import load_settings


class _Failed(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="why")


@pytest.mark.parametrize(
    ("code", "cls", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, ServiceUnavailableError, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, RequestTimeoutError, True),
        (grpc.StatusCode.PERMISSION_DENIED, ForbiddenError, False),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthorizedError, False),
        (grpc.StatusCode.DATA_LOSS, InternalError, False),
    ],
)
def test_grpc_failures_become_typed_errors(code: grpc.StatusCode, cls: type, retryable: bool) -> None:
    err = grpc_error(_Failed(code), request_id="r1")
    assert type(err) is cls and err.retryable is retryable
    assert err.details == {"grpc_status": code.name} and err.request_id == "r1"


def test_exactly_one_target_and_a_tenant_for_a_user() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        _target(None, None, None, None)
    with pytest.raises(ValueError, match="exactly one"):
        _target("c1", "u1", None, "t")
    with pytest.raises(ValueError, match="tenant"):
        _target(None, "u1", None, None)
    target, tenant = _target(None, "u1", None, "acme")
    assert target.user_id == "u1" and tenant == "acme"
    target, tenant = _target(None, None, "acme", None)
    assert target.tenant_id == "acme" and tenant == ""


async def test_retries_an_idempotent_call_only(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = AsyncBackend("127.0.0.1:1", settings=load_settings({}), attempts=3, backoff_base=0.001)
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _Failed(grpc.StatusCode.UNAVAILABLE)
        return "ok"

    assert await backend._call(flaky, retry=True) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(ServiceUnavailableError):
        await backend._call(flaky, retry=False)
    assert len(calls) == 1


def test_submitted_status() -> None:
    assert Submitted("r", {"type": "acknowledgment"}, 1).status == "PENDING"
    assert Submitted("r", {"type": "complete"}, 1).status == "COMPLETED"
    assert Submitted("r", {"type": "status", "status": "PROCESSING"}, 0).status == "PROCESSING"
