"""One async DynamoDB client per process, and the (de)serialisation of items.

aiobotocore is the async client: the services' hot paths (every WebSocket message,
every progress update) must not block the event loop, and running boto3 in a
thread pool would cap throughput at the pool size while adding a thread hop per
call. boto3 is used only for its pure type (de)serialisers.
"""

from __future__ import annotations

import contextlib
import decimal
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from streamer.config import Settings
from streamer.store.errors import ItemTooLarge, StoreError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return sorted(_from_dynamo(v) for v in value)
    return value


def serialize(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (floats become exact decimals)."""
    return _serializer.serialize(_to_dynamo(value))  # type: ignore[no-any-return]


def serialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A Python dict as a DynamoDB item; ``None`` values are left out."""
    return {k: serialize(v) for k, v in item.items() if v is not None}


def deserialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain Python (numbers as int or float)."""
    return {k: _from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


def error_code(exc: BaseException) -> str:
    """The botocore error code of ``exc`` ('' when it is not a ClientError)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def wrap_error(exc: BaseException, action: str) -> StoreError:
    """A :class:`StoreError` for an unexpected botocore failure (keeps the cause).

    An item over DynamoDB's size limit is an :class:`ItemTooLarge` (not retryable).
    """
    code = error_code(exc) or type(exc).__name__
    message = str(exc.response.get("Error", {}).get("Message", "")) if isinstance(exc, ClientError) else ""
    if code == "ValidationException" and "item size" in message.lower():
        return ItemTooLarge(f"DynamoDB {action} failed: {code}: {message[:200]}")
    err = StoreError(f"DynamoDB {action} failed: {code}")
    err.retryable = code not in ("ValidationException", "ResourceNotFoundException", "AccessDeniedException")
    return err


BOTO_ERRORS = (ClientError, BotoCoreError)


def client_config(*, settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``session.create_client`` for this deployment."""
    kwargs: dict[str, Any] = {
        "region_name": settings.aws_region,
        "config": AioConfig(
            # Our stores build every request from typed records; botocore re-validating
            # each one against the service model was a measurable share of a call's CPU
            # (docs/benchmarks.md). DynamoDB still validates server-side.
            parameter_validation=False,
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=2,
            read_timeout=10,
            max_pool_connections=64,
            tcp_keepalive=True,
        ),
    }
    if settings.dynamodb_endpoint:
        kwargs["endpoint_url"] = settings.dynamodb_endpoint
    return kwargs


_shared_session: Any = None


def _session() -> Any:
    """One botocore session per process: it caches the service models (~0.15 s a load)."""
    global _shared_session
    if _shared_session is None:
        _shared_session = get_session()
    return _shared_session


def _configured_credentials() -> bool:
    """Whether the environment names AWS credentials (without probing the network)."""
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    if os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") or os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    if os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        return True
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", os.path.expanduser("~/.aws/credentials"))
    return os.path.exists(shared)


@contextlib.asynccontextmanager
async def open_client(service: str, *, settings: Settings) -> AsyncIterator[Any]:
    """An aiobotocore client for ``dynamodb`` or ``dynamodbstreams``.

    Against a local endpoint with no AWS credentials in the environment, dummy
    credentials are used (DynamoDB Local accepts any).
    """
    session = _session()
    kwargs = client_config(settings=settings)
    if settings.dynamodb_endpoint and not _configured_credentials():
        # Walking botocore's credential chain costs up to a second (it ends probing the
        # instance metadata endpoint); a local endpoint accepts any key, so skip it.
        kwargs["aws_access_key_id"] = "local"
        kwargs["aws_secret_access_key"] = "local"
    async with session.create_client(service, **kwargs) as client:
        yield client
