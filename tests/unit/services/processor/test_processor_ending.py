"""The ending policy (services/processor/ending.py): what an attempt's outcome means, and the final error."""

from __future__ import annotations

import pytest

from services.processor.attempt import Kind, Outcome
from services.processor.ending import Ending, decide, final_error
from services.processor.jobs import StopReason


def test_final_error_codes() -> None:
    timeout = Outcome(kind=Kind.ERROR, code="TIMEOUT", message="late", retryable=True)
    err = final_error(timeout, attempt=3, max_attempts=3)
    assert err["code"] == "TIMEOUT" and err["retryable"] is False
    assert err["details"] == {"attempts": 3, "max_attempts": 3}

    invalid = Outcome(kind=Kind.ERROR, code="VALIDATION_ERROR", message="bad", details=[{"path": "x"}])
    assert final_error(invalid, attempt=1, max_attempts=3)["code"] == "VALIDATION_ERROR"

    unavailable = Outcome(kind=Kind.ERROR, code="SERVICE_UNAVAILABLE", message="down", retryable=True)
    err = final_error(unavailable, attempt=2, max_attempts=2)
    assert err["code"] == "PROCESSING_FAILED" and err["details"]["cause"] == "SERVICE_UNAVAILABLE"

    # The handler SDK's RESULT_TOO_LARGE (a result over its gRPC message limit) carries the
    # documented details.size / details.limit, as the processor's own refusal does.
    sdk = Outcome(kind=Kind.ERROR, code="RESULT_TOO_LARGE", message="big", details={"size": 9, "limit": 5})
    assert final_error(sdk, attempt=1, max_attempts=3)["details"] == {
        "attempts": 1,
        "max_attempts": 3,
        "size": 9,
        "limit": 5,
    }


def ending(
    outcome: Outcome, *, stop: StopReason | None = None, attempt: int = 1, max_attempts: int = 3
) -> Ending:
    return decide(outcome, stop=stop, attempt=attempt, max_attempts=max_attempts, max_result_bytes=100).ending


RESULT = Outcome(kind=Kind.RESULT, result={"ok": True}, size=10)
RETRYABLE = Outcome(kind=Kind.ERROR, code="SERVICE_UNAVAILABLE", message="down", retryable=True)
FINAL = Outcome(kind=Kind.ERROR, code="PROCESSING_FAILED", message="no")


@pytest.mark.parametrize(
    ("outcome", "stop", "attempt", "expected"),
    [
        (RESULT, None, 1, Ending.COMPLETE),
        (RESULT, StopReason.CANCEL, 1, Ending.COMPLETE),  # done is done
        (RESULT, StopReason.LOST, 1, Ending.STOPPED),  # not ours to write any more
        (Outcome(kind=Kind.STOPPED), StopReason.SHUTDOWN, 1, Ending.STOPPED),
        (RETRYABLE, None, 1, Ending.RETRY),
        (RETRYABLE, None, 3, Ending.FAIL),  # the last attempt
        (RETRYABLE, StopReason.CANCEL, 1, Ending.CANCEL),  # failed while being cancelled
        (FINAL, None, 1, Ending.FAIL),
    ],
)
def test_decide(outcome: Outcome, stop: StopReason | None, attempt: int, expected: Ending) -> None:
    assert ending(outcome, stop=stop, attempt=attempt) is expected


def test_a_result_too_large_fails_with_its_own_code_at_once() -> None:
    big = Outcome(kind=Kind.RESULT, result="x" * 200, size=200)
    decision = decide(big, stop=None, attempt=1, max_attempts=5, max_result_bytes=100)
    assert decision.ending is Ending.FAIL
    assert decision.outcome.code == "RESULT_TOO_LARGE" and decision.outcome.details == {
        "size": 200,
        "limit": 100,
    }
