"""The one classification of handler endings (streamer.handler_client), shared by router and processor."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from streamer import rpc
from streamer.handler_client import Invocation, handler_failure, rpc_failure


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT", True),
        (grpc.StatusCode.UNAVAILABLE, "SERVICE_UNAVAILABLE", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVICE_UNAVAILABLE", True),
        (grpc.StatusCode.CANCELLED, "SERVICE_UNAVAILABLE", True),
        (grpc.StatusCode.INTERNAL, "INTERNAL_ERROR", True),
        (grpc.StatusCode.UNKNOWN, "INTERNAL_ERROR", True),
        (grpc.StatusCode.UNIMPLEMENTED, "INTERNAL_ERROR", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "INTERNAL_ERROR", False),
    ],
)
def test_rpc_errors_are_classified_once(status: grpc.StatusCode, code: str, retryable: bool) -> None:
    exc = aio.AioRpcError(status, aio.Metadata(), aio.Metadata(), details="x", debug_error_string="")
    failure = rpc_failure(exc, action="work", timeout=2.0)
    assert (failure.code, failure.retryable, failure.grpc_status) == (code, retryable, status.name)
    assert failure.details == {"grpc_status": status.name}


def test_handler_errors_keep_documented_codes_and_filter_unknown_ones() -> None:
    refused = handler_failure(rpc.error_pb("VALIDATION_ERROR", "bad", details=[{"path": "x"}]))
    assert (refused.code, refused.details, refused.retryable, refused.grpc_status) == (
        "VALIDATION_ERROR",
        [{"path": "x"}],
        False,
        "",
    )
    assert handler_failure(rpc.error_pb("MY_OWN_CODE", "boom")).code == "PROCESSING_FAILED"
    assert handler_failure(rpc.error_pb("TIMEOUT", "late")).retryable is True
    assert handler_failure(rpc.error_pb("PROCESSING_FAILED", "", retryable=True)).message == "Handler failed"


def test_invocation_builds_the_one_invoke_request() -> None:
    pb = Invocation(
        request_id="r1",
        action="work",
        payload=None,
        metadata={"priority": 3},
        user_id="u",
        tenant_id="t",
        permissions=("a",),
        attempt=2,
        connection_id="c",
    ).to_pb()
    assert (pb.request_id, pb.action, pb.attempt, pb.connection_id) == ("r1", "work", 2, "c")
    assert rpc.loads(pb.payload) == {} and rpc.loads(pb.metadata) == {"priority": 3}
    assert (pb.principal.user_id, pb.principal.tenant_id, list(pb.principal.permissions)) == ("u", "t", ["a"])


def test_a_message_over_the_grpc_limit_is_result_too_large_and_final() -> None:
    # A handler answering more than the caller accepts: retrying gets the same answer again.
    exc = aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        aio.Metadata(),
        aio.Metadata(),
        details="Received message larger than max (5000023 vs. 4194304)",
        debug_error_string="",
    )
    failure = rpc_failure(exc, action="work", timeout=2.0)
    assert (failure.code, failure.retryable, failure.grpc_status) == (
        "RESULT_TOO_LARGE",
        False,
        "RESOURCE_EXHAUSTED",
    )
