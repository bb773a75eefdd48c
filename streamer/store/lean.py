"""A lean asyncio DynamoDB client for the item calls on the services' hot paths.

Why it exists (#12 item 2, measured on the 2-core bench machine against DynamoDB Local,
``python -m bench.run --only async --quick``): a conditional PutItem cost 0.66 ms of
client CPU through aiobotocore (parameter validation already off) against 0.22 ms
through aiodynamo — 408 against 922 puts/s from one process. aiodynamo could not be
adopted: it has no ``ReturnValuesOnConditionCheckFailure`` (the claim fencing reads
the refused item back from it) and its own request/response types would have meant
rewriting every store. Almost all of aiobotocore's cost is generic machinery
(event hooks, the service model walked to serialise and again to parse, the retry
handler chain), none of which the DynamoDB JSON protocol needs: the stores already
build the exact wire dicts (AttributeValues).

This client, measured the same way (docs/benchmarks.md, "Round 3: lean DynamoDB client"):
0.18 ms per conditional PutItem against aiodynamo's 0.23 ms and aiobotocore's 0.63 ms, and
the async echo completed 1.43x the requests/s with it than with aiobotocore.

It sends the stores' parameter dicts as they are: one HTTP POST per call
(``X-Amz-Target: DynamoDB_20120810.<Op>``, ``application/x-amz-json-1.0``) over one
aiohttp session, signed with SigV4 (:class:`SigV4`: botocore's algorithm, checked byte
for byte against ``botocore.auth.SigV4Auth``, at a fraction of its CPU) with the
aiobotocore client's credentials (refreshable credentials refresh themselves). It answers exactly as
botocore does: the same response dicts (``ResponseMetadata`` included, ``B``/``BS``
values as bytes), the same :class:`botocore.exceptions.ClientError` subclasses with
``Error.Code``/``Message``, the modeled fields of the error (the ``Item`` of a
``ConditionalCheckFailedException`` asked with ``ALL_OLD``) and botocore's transport
exceptions (``EndpointConnectionError``, ``ReadTimeoutError``, ...), so
:func:`streamer.store.dynamo.wrap_error` and every caller work unchanged. It retries
like botocore's standard mode: 3 attempts, throttling codes, transient codes, 5xx,
connection errors and timeouts, waiting ``rand · min(20 s, 2^(n-1) s)``
(:class:`streamer.retry.Backoff` with full jitter), within botocore's retry quota (so
an outage does not triple the calls).

What it deliberately does not do:

- no parameter validation (DynamoDB validates server-side; the services had it off);
- no ``botocore.auth.SigV4Auth`` at run time (it was 60 % of the CPU per call): the
  same signature from a template, for the headers this client sends and nothing else
  (no ``amz-sdk-*`` headers); verified against botocore's signer, not against AWS itself
  from this machine (no network to it);
- no other operation: table management (create/describe/update table, TTL, PITR) and
  DynamoDB Streams stay on aiobotocore — any other attribute is the aiobotocore
  client's (:meth:`LeanDynamoDB.__getattr__`);
- no client-side rate limiting (botocore's ``adaptive`` mode), no endpoint discovery, no CRC32 check of the
  answer (botocore's legacy mode only), no event hooks, no botocore/OpenTelemetry
  botocore spans (an aiohttp client span instead, when tracing is on);
- no compression of answers (``Accept-Encoding: identity``, as botocore asks).

``STREAMER_DYNAMODB_CLIENT`` (``lean`` | ``botocore``) chooses it for
:meth:`streamer.store.Store.open`; figures in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http
import inspect
import json
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from botocore.auth import _host_from_url
from botocore.configprovider import NEW_RETRIES_ENABLED
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.retries.quota import RetryQuota
from botocore.utils import normalize_url_path

from streamer.config import Settings
from streamer.retry import Backoff
from streamer.store.dynamo import client_config, open_client

__all__ = [
    "OPERATIONS",
    "LeanDynamoDB",
    "SigV4",
    "is_retryable",
    "open_data_client",
]

#: The item operations this client sends itself (method name → DynamoDB operation).
OPERATIONS: Mapping[str, str] = {
    "get_item": "GetItem",
    "put_item": "PutItem",
    "update_item": "UpdateItem",
    "delete_item": "DeleteItem",
    "query": "Query",
    "scan": "Scan",
    "batch_get_item": "BatchGetItem",
    "batch_write_item": "BatchWriteItem",
    "transact_get_items": "TransactGetItems",
    "transact_write_items": "TransactWriteItems",
}

# botocore.retries.standard: ThrottledRetryableChecker and TransientRetryableChecker.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalServerError"}
)
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
# botocore.retries.standard.RetryQuotaChecker's costs.
_RETRY_COST = 5
_RETRY_COST_V2 = 14
_THROTTLING_RETRY_COST = 5
_TIMEOUT_RETRY_COST = 10
_NO_RETRY_INCREMENT = 1
#: botocore's standard mode waits ``rand(0, 1) · min(20, 2^(attempt - 1))`` seconds.
STANDARD_BACKOFF = Backoff(base=1.0, cap=20.0, jitter=1.0)

_TARGET = "DynamoDB_20120810."
_JSON = "application/x-amz-json-1.0"
#: A ``B`` or ``BS`` attribute value in an answer (only then is the answer walked).
_BINARY = re.compile(rb'"BS?"\s*:\s*[\["]')


def _amz_date() -> str:
    """Now as SigV4's ``X-Amz-Date`` (UTC, ``20261201T080000Z``)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class SigV4:
    """AWS Signature Version 4 for DynamoDB JSON POSTs, exactly as ``botocore.auth.SigV4Auth``.

    botocore's signer cost 0.1 to 0.2 ms per call here (two ``email.message`` header maps,
    URL parsing, a prepared request to hash the body, the key derived again each time):
    most of this client's CPU. The calls this client signs always carry the same header
    names, so the canonical request is a string template, and the derived key is kept for
    its day. A unit test checks the ``Authorization`` header is byte for byte botocore's.
    """

    def __init__(self, *, url: str, region: str, service: str = "dynamodb") -> None:
        parts = urllib.parse.urlsplit(url)
        self.host = _host_from_url(url)
        self.path = urllib.parse.quote(normalize_url_path(parts.path or "/"), safe="/~")
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] = ("", "", b"")

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key[0] != secret or self._key[1] != day:
            key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (secret, day, key)
        return self._key[2]

    def headers(self, credentials: Any, target: str, body: bytes, amz_date: str) -> dict[str, str]:
        """The headers of one call, signed (``credentials``: botocore's frozen credentials)."""
        day = amz_date[:8]
        token = credentials.token
        if token:
            token = " ".join(token.split())
            names = "accept-encoding;content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
            canonical_headers = (
                f"accept-encoding:identity\ncontent-type:{_JSON}\nhost:{self.host}\n"
                f"x-amz-date:{amz_date}\nx-amz-security-token:{token}\nx-amz-target:{target}\n"
            )
        else:
            names = "accept-encoding;content-type;host;x-amz-date;x-amz-target"
            canonical_headers = (
                f"accept-encoding:identity\ncontent-type:{_JSON}\nhost:{self.host}\n"
                f"x-amz-date:{amz_date}\nx-amz-target:{target}\n"
            )
        canonical = f"POST\n{self.path}\n\n{canonical_headers}\n{names}\n{hashlib.sha256(body).hexdigest()}"
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(
            self._signing_key(credentials.secret_key, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers = {
            "Host": self.host,
            "Content-Type": _JSON,
            "X-Amz-Target": target,
            "Accept-Encoding": "identity",
            "X-Amz-Date": amz_date,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}",
        }
        if token:
            headers["X-Amz-Security-Token"] = credentials.token
        return headers


def is_retryable(code: str, status: int) -> bool:
    """Whether botocore's standard mode retries an error answer (code, HTTP status)."""
    return code in THROTTLING_CODES or code in TRANSIENT_CODES or status in TRANSIENT_STATUS


def _encode(value: Any) -> str:
    """JSON for what json cannot write: binary attribute values (bytes, boto3 Binary)."""
    raw = getattr(value, "value", value)
    if isinstance(raw, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(raw)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _decode_binary(value: Any) -> None:
    """Decode every ``B``/``BS`` attribute value under ``value`` in place (as botocore)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "B" and isinstance(inner, str):
                value[key] = base64.b64decode(inner)
            elif key == "BS" and isinstance(inner, list) and all(isinstance(v, str) for v in inner):
                value[key] = [base64.b64decode(v) for v in inner]
            else:
                _decode_binary(inner)
    elif isinstance(value, list):
        for inner in value:
            _decode_binary(inner)


def _body(raw: bytes) -> dict[str, Any]:
    out = json.loads(raw) if raw else {}
    if not isinstance(out, dict):
        return {"message": raw.decode("utf-8", "replace")}
    if _BINARY.search(raw):
        _decode_binary(out)
    return out


def _operation(operation: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The client method for ``operation``: botocore's keyword arguments, botocore's answer."""

    async def method(self: LeanDynamoDB, **params: Any) -> dict[str, Any]:
        return await self.call(operation, params)

    method.__doc__ = f"DynamoDB ``{operation}`` (the keyword arguments and answer of botocore's)."
    return method


class LeanDynamoDB:
    """DynamoDB item calls over aiohttp; everything else goes to the aiobotocore client.

    ``fallback`` is the aiobotocore ``dynamodb`` client (its ``meta.service_model``
    names the modeled error fields, its ``exceptions`` the error classes).
    ``credentials`` has ``get_frozen_credentials()`` (sync or async); None (the chain
    found none) fails each call with botocore's ``NoCredentialsError``, as aiobotocore
    does. ``sleep`` is injectable for tests.
    """

    def __init__(
        self,
        fallback: Any,
        *,
        http: aiohttp.ClientSession,
        endpoint: str,
        region: str,
        credentials: Any,
        max_attempts: int = 3,
        backoff: Backoff = STANDARD_BACKOFF,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._fallback = fallback
        self._http = http
        self._url = endpoint.rstrip("/") + "/"
        self._signer = SigV4(url=self._url, region=region)
        self._region = region
        self._credentials = credentials
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._sleep = sleep
        # botocore's standard mode: one retry quota per client (500; a retry takes 5, a
        # timeout's 10; a success gives back 1, or what its own retry took).
        self._quota = RetryQuota()
        service_model = getattr(getattr(fallback, "meta", None), "service_model", None)
        self._service_model = service_model

    def __getattr__(self, name: str) -> Any:
        # Table management, waiters, paginators, meta, exceptions: aiobotocore's.
        return getattr(self._fallback, name)

    get_item = _operation("GetItem")
    put_item = _operation("PutItem")
    update_item = _operation("UpdateItem")
    delete_item = _operation("DeleteItem")
    query = _operation("Query")
    scan = _operation("Scan")
    batch_get_item = _operation("BatchGetItem")
    batch_write_item = _operation("BatchWriteItem")
    transact_get_items = _operation("TransactGetItems")
    transact_write_items = _operation("TransactWriteItems")

    async def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One DynamoDB ``operation`` with botocore-shaped ``params``, retried as botocore does."""
        body = json.dumps(params, separators=(",", ":"), default=_encode).encode()
        attempt = 0
        acquired = 0  # retry quota taken by this call's last retry
        while True:
            attempt += 1
            try:
                status, headers, raw = await self._send(operation, body)
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = self.transport_error(exc)
                if attempt >= self._max_attempts:
                    raise error from exc
                acquired = self._retry_cost(error=error)
                if not self._quota.acquire(acquired):
                    raise error from exc
                await self._sleep(self._backoff.delay(attempt))
                continue
            meta = {
                "HTTPStatusCode": status,
                "HTTPHeaders": headers,
                "RetryAttempts": attempt - 1,
            }
            if "x-amzn-requestid" in headers:
                meta = {"RequestId": headers["x-amzn-requestid"], **meta}
            if status < 300:
                self._quota.release(acquired or _NO_RETRY_INCREMENT)
                out = _body(raw)
                out["ResponseMetadata"] = meta
                return out
            parsed = self.error_response(raw, status, meta)
            code = parsed["Error"]["Code"]
            if is_retryable(code, status):
                if attempt >= self._max_attempts:
                    meta["MaxAttemptsReached"] = True
                else:
                    acquired = self._retry_cost(code=code)
                    if self._quota.acquire(acquired):
                        await self._sleep(self._backoff.delay(attempt))
                        continue
                    meta["RetryQuotaReached"] = True
            raise self.client_error(parsed, operation)

    @staticmethod
    def _retry_cost(*, code: str = "", error: BaseException | None = None) -> int:
        """What a retry takes from the quota (botocore's ``RetryQuotaChecker``)."""
        if NEW_RETRIES_ENABLED:
            return _THROTTLING_RETRY_COST if code in THROTTLING_CODES else _RETRY_COST_V2
        return (
            _TIMEOUT_RETRY_COST if isinstance(error, ConnectTimeoutError | ReadTimeoutError) else _RETRY_COST
        )

    async def _send(self, operation: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        target = _TARGET + operation
        if self._credentials is None:
            raise NoCredentialsError()
        frozen = self._credentials.get_frozen_credentials()
        if inspect.isawaitable(frozen):
            frozen = await frozen
        headers = self._signer.headers(frozen, target, body, _amz_date())
        async with self._http.post(self._url, data=body, headers=headers) as resp:
            raw = await resp.read()
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, raw

    def error_response(self, raw: bytes, status: int, meta: dict[str, Any]) -> dict[str, Any]:
        """botocore's parsed error answer: Error, ResponseMetadata and the modeled fields."""
        if status >= 500 and (not raw or raw.lstrip().startswith(b"<")):
            # botocore's generic error parse (an HTML or empty answer from a proxy).
            return {
                "Error": {"Code": str(status), "Message": http.HTTPStatus(status).phrase},
                "ResponseMetadata": meta,
            }
        try:
            body = _body(raw)
        except ValueError:
            body = {"message": raw.decode("utf-8", "replace")}
        code = str(body.get("__type", str(status)))
        if ":" in code:
            code = code.split(":", 1)[0]
        if "#" in code:
            code = code.rsplit("#", 1)[1]
        parsed: dict[str, Any] = {
            "Error": {"Message": body.get("message", body.get("Message", "")), "Code": code},
            "ResponseMetadata": meta,
        }
        shape = self._error_shape(code)
        if shape is not None:
            for name, member in shape.members.items():
                value = body.get(member.serialization.get("name", name))
                if value is not None:
                    parsed[name] = value
        return parsed

    def _error_shape(self, code: str) -> Any:
        if self._service_model is None:
            return None
        try:
            return self._service_model.shape_for_error_code(code)
        except Exception:  # an unknown code: no modeled fields
            return None

    def client_error(self, parsed: dict[str, Any], operation: str) -> ClientError:
        """The botocore exception class for the error's code (ClientError when unmodeled)."""
        code = parsed["Error"]["Code"]
        factory = getattr(self._fallback, "exceptions", None)
        cls: type[ClientError] = ClientError
        if factory is not None:
            with contextlib.suppress(Exception):
                cls = factory.from_code(code)
        return cls(parsed, operation)

    def transport_error(self, exc: BaseException) -> HTTPClientError | EndpointConnectionError:
        """botocore's exception for an HTTP-level failure (what its retries and callers know)."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return ConnectTimeoutError(endpoint_url=self._url, error=exc)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return EndpointConnectionError(endpoint_url=self._url, error=exc)
        if isinstance(exc, asyncio.TimeoutError):
            return ReadTimeoutError(endpoint_url=self._url, error=exc)
        if isinstance(
            exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | aiohttp.ClientPayloadError
        ):
            return ConnectionClosedError(endpoint_url=self._url, error=exc)
        return HTTPClientError(error=exc)


@contextlib.asynccontextmanager
async def open_data_client(*, settings: Settings) -> AsyncIterator[Any]:
    """The DynamoDB client of the stores: :class:`LeanDynamoDB` or the aiobotocore client.

    ``settings.dynamodb_client`` chooses (``lean`` | ``botocore``). The lean client
    wraps the aiobotocore client (same endpoint, region, credentials, timeouts,
    connection pool size and attempts, from :func:`streamer.store.dynamo.client_config`).
    """
    async with open_client("dynamodb", settings=settings) as boto:
        if settings.dynamodb_client != "lean":
            yield boto
            return
        config = client_config(settings=settings)["config"]
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )
        connector = aiohttp.TCPConnector(limit=config.max_pool_connections)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
        ) as session:
            yield LeanDynamoDB(
                boto,
                http=session,
                endpoint=boto.meta.endpoint_url,
                region=boto.meta.region_name,
                # What the aiobotocore client signs with: the dummy local key, or the
                # resolved (refreshable) credentials of the session's chain.
                credentials=boto._request_signer._credentials,
                max_attempts=int(config.retries.get("max_attempts", 3)),
            )
