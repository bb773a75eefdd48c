"""End-to-end fixtures: the real local stack (every service its own process) per test module.

Each module gets one :class:`~streamer.local.stack.LocalStack` on the session's DynamoDB
Local with its own table prefix, and intervals short enough that recovery paths
(claim expiry, sweeps, shard-lease takeover) happen within seconds (see
``e2e_helpers.E2E_ENV``). Logs go to a pytest temp dir (kept for the last few runs)
so a failure can be read afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from e2e_helpers import running_stack

from streamer.local.stack import LocalStack


@pytest.fixture(scope="module")
async def stack(dynamodb: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    async with running_stack(dynamodb, tmp_path_factory.mktemp("stack")) as st:
        yield st
