"""Shared fixtures: one real DynamoDB Local for the whole run, fresh tables per test.

Every test that touches storage gets its own table prefix, so tests never see each
other's items and can run in any order against the same DynamoDB Local process.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from streamer.config import Settings, load_settings
from streamer.local.dynamodb import DynamoDBLocal
from streamer.store import Store
from streamer.store.tables import ensure_tables


@pytest.fixture(scope="session")
def dynamodb() -> Iterator[str]:
    """The endpoint URL of a DynamoDB Local started for this test run."""
    import asyncio

    db = DynamoDBLocal()
    asyncio.run(db.start())
    try:
        yield db.endpoint
    finally:
        db.stop()


@pytest.fixture
def table_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def settings(dynamodb: str, table_prefix: str) -> Settings:
    """Settings pointing at DynamoDB Local with freshly created tables."""
    s = load_settings({}, dynamodb_endpoint=dynamodb, table_prefix=table_prefix, log_json=True)
    await ensure_tables(settings=s)
    return s


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with Store.open(settings=settings) as st:
        yield st
