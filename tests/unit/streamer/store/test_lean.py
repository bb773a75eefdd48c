"""The lean DynamoDB client's error mapping and retry decisions, over a scripted transport.

The transport (``_send``) is replaced by a script of answers or exceptions; the real
botocore DynamoDB service model supplies the modeled error fields and classes, so what is
checked is exactly what :func:`streamer.store.dynamo.wrap_error` and the stores see.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import botocore.session
import pytest
from botocore.credentials import Credentials
from botocore.errorfactory import ClientExceptionsFactory
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from streamer.retry import Backoff
from streamer.store.dynamo import wrap_error
from streamer.store.errors import ItemTooLarge
from streamer.store.lean import STANDARD_BACKOFF, LeanDynamoDB, is_retryable

_MODEL = botocore.session.get_session().get_service_model("dynamodb")


class _Meta:
    service_model = _MODEL
    region_name = "us-east-1"


class _Fallback:
    """What the lean client needs of the aiobotocore client (and what it delegates)."""

    meta = _Meta()
    exceptions = ClientExceptionsFactory().create_client_exceptions(_MODEL)

    async def describe_table(self, **kwargs: Any) -> dict[str, Any]:
        return {"Table": {"TableName": kwargs["TableName"]}}


Answer = tuple[int, dict[str, Any] | bytes] | BaseException


class Recording:
    """An aiohttp session that keeps the headers of each POST and cuts the connection."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    def post(self, url: str, *, data: bytes, headers: dict[str, str]) -> Any:
        self.headers.append(headers)
        raise aiohttp.ClientPayloadError("stop")


class Scripted(LeanDynamoDB):
    def __init__(self, answers: Sequence[Answer], *, max_attempts: int = 3) -> None:
        self.slept: list[float] = []

        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)

        super().__init__(
            _Fallback(),
            http=None,  # type: ignore[arg-type]
            endpoint="http://127.0.0.1:1",
            region="us-east-1",
            credentials=Credentials("k", "s"),
            max_attempts=max_attempts,
            sleep=sleep,
        )
        self.answers = list(answers)
        self.sent: list[tuple[str, bytes]] = []

    async def _send(self, operation: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.sent.append((operation, body))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        status, payload = answer
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return status, {"x-amzn-requestid": "rid", "content-type": "application/x-amz-json-1.0"}, raw


def _err(code: str, message: str = "m", **extra: Any) -> dict[str, Any]:
    return {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **extra}


THROTTLED = (400, _err("ProvisionedThroughputExceededException"))
OK = (200, {"Attributes": {"a": {"S": "x"}}})


async def test_a_success_is_botocores_response_dict() -> None:
    c = Scripted([OK])
    out = await c.update_item(TableName="t", Key={"k": {"S": "1"}})
    assert out == {
        "Attributes": {"a": {"S": "x"}},
        "ResponseMetadata": {
            "RequestId": "rid",
            "HTTPStatusCode": 200,
            "HTTPHeaders": {"x-amzn-requestid": "rid", "content-type": "application/x-amz-json-1.0"},
            "RetryAttempts": 0,
        },
    }
    assert c.sent == [("UpdateItem", b'{"TableName":"t","Key":{"k":{"S":"1"}}}')]


async def test_binary_values_go_out_as_base64_and_come_back_as_bytes() -> None:
    c = Scripted(
        [(200, {"Item": {"b": {"B": "AP8="}, "bs": {"BS": ["YQ=="]}, "m": {"M": {"B": {"S": "s"}}}}})]
    )
    out = await c.get_item(TableName="t", Key={"k": {"B": b"\x00\xff"}})
    assert json.loads(c.sent[0][1])["Key"] == {"k": {"B": "AP8="}}
    assert out["Item"] == {"b": {"B": b"\x00\xff"}, "bs": {"BS": [b"a"]}, "m": {"M": {"B": {"S": "s"}}}}


async def test_a_refused_condition_carries_the_old_item_as_botocore_does() -> None:
    c = Scripted(
        [
            (
                400,
                _err(
                    "ConditionalCheckFailedException",
                    "The conditional request failed",
                    Item={"a": {"N": "1"}},
                ),
            )
        ]
    )
    with pytest.raises(ClientError) as info:
        await c.put_item(TableName="t", Item={}, ReturnValuesOnConditionCheckFailure="ALL_OLD")
    exc = info.value
    assert isinstance(exc, _Fallback.exceptions.ConditionalCheckFailedException)
    assert exc.response["Error"] == {
        "Message": "The conditional request failed",
        "Code": "ConditionalCheckFailedException",
    }
    assert (
        exc.response["Item"] == {"a": {"N": "1"}}
        and exc.response["message"] == "The conditional request failed"
    )
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert str(exc) == (
        "An error occurred (ConditionalCheckFailedException) when calling the PutItem operation: "
        "The conditional request failed"
    )
    assert c.slept == []  # never retried


async def test_validation_errors_are_not_retried_and_map_to_store_errors() -> None:
    c = Scripted(
        [
            (
                400,
                {
                    "__type": "com.amazon.coral.validate#ValidationException",
                    "Message": "Item size has exceeded",
                },
            )
        ]
    )
    with pytest.raises(ClientError) as info:
        await c.put_item(TableName="t", Item={})
    assert info.value.response["Error"] == {
        "Message": "Item size has exceeded",
        "Code": "ValidationException",
    }
    assert isinstance(wrap_error(info.value, "PutItem"), ItemTooLarge)
    assert len(c.sent) == 1


@pytest.mark.parametrize(
    "failure",
    [
        THROTTLED,
        (400, _err("ThrottlingException")),
        (400, _err("RequestLimitExceeded")),
        (500, {"__type": "com.amazon.coral.service#InternalServerError", "message": "boom"}),
        (503, b"<html>Service Unavailable</html>"),
        (502, b""),
    ],
)
async def test_throttling_and_5xx_are_retried(failure: Answer) -> None:
    c = Scripted([failure, failure, OK])
    out = await c.update_item(TableName="t")
    assert out["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(c.sent) == 3 and c.sent[0] == c.sent[2]
    assert 0 < c.slept[0] <= 1.0 and 0 < c.slept[1] <= 2.0  # rand · min(20, 2^(n-1)), as botocore


async def test_exhausted_retries_raise_the_last_error_marked_as_botocore_does() -> None:
    c = Scripted([THROTTLED] * 3)
    with pytest.raises(ClientError) as info:
        await c.put_item(TableName="t")
    meta = info.value.response["ResponseMetadata"]
    assert meta["RetryAttempts"] == 2 and meta["MaxAttemptsReached"] is True
    assert "(reached max retries: 2)" in str(info.value)
    assert info.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert wrap_error(info.value, "PutItem").retryable
    assert len(c.slept) == 2


async def test_a_generic_5xx_answer_is_parsed_as_botocore_does() -> None:
    c = Scripted([(503, b"<html>x</html>")], max_attempts=1)
    with pytest.raises(ClientError) as info:
        await c.query(TableName="t")
    assert info.value.response["Error"] == {"Code": "503", "Message": "Service Unavailable"}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiohttp.ServerDisconnectedError(), ConnectionClosedError),
        (aiohttp.ClientPayloadError("cut"), ConnectionClosedError),
        (aiohttp.ClientOSError(104, "reset"), ConnectionClosedError),
        (aiohttp.SocketTimeoutError(), ReadTimeoutError),
        (TimeoutError(), ReadTimeoutError),
        (aiohttp.ConnectionTimeoutError(), ConnectTimeoutError),
        (
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
                OSError(111, "refused"),
            ),
            EndpointConnectionError,
        ),
    ],
)
async def test_transport_failures_are_retried_then_raised_as_botocores(
    exc: BaseException, expected: type[Exception]
) -> None:
    c = Scripted([exc, OK])
    assert (await c.get_item(TableName="t"))["ResponseMetadata"]["RetryAttempts"] == 1
    c = Scripted([exc, exc, exc])
    with pytest.raises(expected) as info:
        await c.get_item(TableName="t")
    assert info.value.__cause__ is exc
    assert wrap_error(info.value, "GetItem").retryable
    assert len(c.sent) == 3


async def test_cancellation_is_not_retried() -> None:
    c = Scripted([asyncio.CancelledError()])
    with pytest.raises(asyncio.CancelledError):
        await c.get_item(TableName="t")
    assert c.slept == []


async def test_other_attributes_are_the_aiobotocore_clients() -> None:
    c = Scripted([])
    assert await c.describe_table(TableName="x") == {"Table": {"TableName": "x"}}
    assert c.meta.region_name == "us-east-1"


def test_retry_decisions_follow_botocore_standard_mode() -> None:
    assert is_retryable("ProvisionedThroughputExceededException", 400)
    assert is_retryable("ThrottlingException", 400)
    assert is_retryable("InternalServerError", 500)
    assert is_retryable("Whatever", 503)
    assert not is_retryable("ConditionalCheckFailedException", 400)
    assert not is_retryable("ValidationException", 400)
    assert not is_retryable("TransactionCanceledException", 400)
    assert Backoff(base=1.0, cap=20.0, jitter=1.0) == STANDARD_BACKOFF
    assert STANDARD_BACKOFF.delay(1, rand=0.0) == 1.0 and STANDARD_BACKOFF.delay(6, rand=0.0) == 20.0


async def test_calls_are_signed_with_sigv4() -> None:
    session = Recording()
    c = LeanDynamoDB(
        _Fallback(),
        http=session,  # type: ignore[arg-type]
        endpoint="http://127.0.0.1:8000",
        region="eu-west-1",
        credentials=Credentials("AKID", "secret", "token"),
        max_attempts=1,
    )
    with pytest.raises(ConnectionClosedError):
        await c.put_item(TableName="t")
    (seen,) = session.headers
    assert seen["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
    assert "/eu-west-1/dynamodb/aws4_request" in seen["Authorization"]
    assert "x-amz-target" in seen["Authorization"] and seen["X-Amz-Security-Token"] == "token"
    assert seen["X-Amz-Target"] == "DynamoDB_20120810.PutItem"
    assert seen["Content-Type"] == "application/x-amz-json-1.0"


@pytest.mark.parametrize(
    ("endpoint", "region", "token", "host"),
    [
        ("https://dynamodb.eu-west-1.amazonaws.com", "eu-west-1", None, "dynamodb.eu-west-1.amazonaws.com"),
        (
            "https://dynamodb.us-east-1.amazonaws.com:443/",
            "us-east-1",
            "tok  en/+=",
            "dynamodb.us-east-1.amazonaws.com",
        ),
        ("http://LOCALHOST:8000/", "us-east-1", None, "localhost:8000"),
        ("http://127.0.0.1:8000", "ap-south-1", "session-token", "127.0.0.1:8000"),
    ],
)
def test_the_signature_is_botocores_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, region: str, token: str | None, host: str
) -> None:
    import datetime

    import botocore.auth
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    from streamer.store.lean import SigV4

    url = endpoint.rstrip("/") + "/"
    signer = SigV4(url=url, region=region)
    creds = Credentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
    ).get_frozen_credentials()
    for when, op, body in (
        (
            datetime.datetime(2026, 12, 1, 8, 0, 0),
            "PutItem",
            '{"TableName":"t","Item":{"k":{"S":"é"}}}'.encode(),
        ),
        (datetime.datetime(2026, 12, 1, 23, 59, 59), "Query", b"{}"),
        (datetime.datetime(2026, 12, 2, 0, 0, 1), "UpdateItem", b'{"TableName":"t"}'),  # a new day: a new key
    ):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda when=when: when)
        reference = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"DynamoDB_20120810.{op}",
                "Accept-Encoding": "identity",
            },
        )
        SigV4Auth(creds, "dynamodb", region).add_auth(reference)
        ours = signer.headers(creds, f"DynamoDB_20120810.{op}", body, when.strftime("%Y%m%dT%H%M%SZ"))
        assert ours["Authorization"] == reference.headers["Authorization"]
        assert ours["X-Amz-Date"] == reference.headers["X-Amz-Date"]
        assert ours.get("X-Amz-Security-Token") == reference.headers.get("X-Amz-Security-Token")
        assert ours["Host"] == host


async def test_each_call_is_signed_when_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamer.store.lean as lean

    dates = iter(["20261201T080000Z", "20261201T080001Z"])
    monkeypatch.setattr(lean, "_amz_date", lambda: next(dates))
    session = Recording()
    c = LeanDynamoDB(
        _Fallback(),
        http=session,  # type: ignore[arg-type]
        endpoint="http://127.0.0.1:8000",
        region="us-east-1",
        credentials=Credentials("k", "s"),
        max_attempts=2,
    )
    with pytest.raises(ConnectionClosedError):
        await c.put_item(TableName="t")
    # A retry is signed again, at its own time.
    seen = session.headers
    assert [h["X-Amz-Date"] for h in seen] == ["20261201T080000Z", "20261201T080001Z"]
    assert seen[0]["Authorization"] != seen[1]["Authorization"]


def test_every_item_operation_is_sent_by_the_lean_client() -> None:
    from streamer.store.lean import OPERATIONS

    for method, operation in OPERATIONS.items():
        assert method in vars(LeanDynamoDB), method  # not delegated to aiobotocore
        assert operation in (getattr(LeanDynamoDB, method).__doc__ or "")


async def test_no_credentials_fail_as_botocore_does_without_sending() -> None:
    from botocore.exceptions import NoCredentialsError

    session = Recording()
    c = LeanDynamoDB(
        _Fallback(),
        http=session,  # type: ignore[arg-type]
        endpoint="https://dynamodb.us-east-1.amazonaws.com",
        region="us-east-1",
        credentials=None,
    )
    with pytest.raises(NoCredentialsError) as info:
        await c.get_item(TableName="t")
    assert session.headers == []
    assert wrap_error(info.value, "GetItem").retryable  # a StoreError, as with aiobotocore


async def test_retries_stop_when_the_retry_quota_is_spent_as_botocores_do() -> None:
    from botocore.retries.quota import RetryQuota

    c = Scripted([THROTTLED, OK, THROTTLED, THROTTLED, THROTTLED, aiohttp.SocketTimeoutError(), OK, OK])
    c._quota = RetryQuota(initial_capacity=5)
    # A retry takes 5; the call's success gives them back.
    assert (await c.put_item(TableName="t"))["ResponseMetadata"]["RetryAttempts"] == 1
    # The quota pays for one retry only: the second failure is raised, marked.
    with pytest.raises(ClientError) as info:
        await c.put_item(TableName="t")
    assert info.value.response["ResponseMetadata"]["RetryQuotaReached"] is True
    assert "MaxAttemptsReached" not in info.value.response["ResponseMetadata"]
    # Nothing left: no retry at all, for an error answer or a timeout (which would take 10).
    with pytest.raises(ClientError):
        await c.put_item(TableName="t")
    with pytest.raises(ReadTimeoutError):
        await c.put_item(TableName="t")
    assert len(c.sent) == 6
    # Each call that succeeds without a retry gives 1 back.
    await c.put_item(TableName="t")
    await c.put_item(TableName="t")
    assert c._quota.available_capacity == 2
