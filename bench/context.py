"""What the scenarios share: sizes, the shared DynamoDB Local, stacks, and clean-up.

Every Streamer stack of the run uses one DynamoDB Local (its own table prefix per
stack), so only one JVM competes for the two cores. Stacks get the benchmark
environment: no per-connection rate limit, example handlers without pauses, and a
JWT secret the client workers sign their tokens with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from bench.procs import RESULTS, Child, stop_all
from bench.sizes import Sizes
from streamer.local.dynamodb import DynamoDBLocal

BENCH_ENV: Mapping[str, str] = {
    "STREAMER_WS_RATE_LIMIT": "0",
    "STREAMER_EXAMPLES_STEP_SECONDS": "0",
}


@dataclasses.dataclass
class Context:
    sizes: Sizes
    quick: bool
    dynamodb: DynamoDBLocal
    secret: str = dataclasses.field(default_factory=lambda: secrets.token_hex(32))
    tag: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:6])
    main_stack: Any = None  # LocalStack with two connects, for sync/async/fan-out/profile
    chain: list[Child] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    _stacks: list[Any] = dataclasses.field(default_factory=list)

    def stack_env(self) -> dict[str, str]:
        return {**BENCH_ENV, "STREAMER_JWT_SECRET": self.secret}

    async def start_stack(
        self,
        *,
        name: str,
        connects: int = 1,
        dynamodb_endpoint: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Any:
        """A LocalStack on the shared DynamoDB Local (or ``dynamodb_endpoint``); ``env`` adds settings."""
        from streamer.local.stack import LocalStack

        stack = LocalStack(
            dynamodb_endpoint=dynamodb_endpoint or self.dynamodb.endpoint,
            table_prefix=f"b{self.tag}{name}".replace("-", ""),
            connects=connects,
            env={**self.stack_env(), **(env or {})},
            run_dir=RESULTS / "stacks" / f"{self.tag}-{name}",
            ready_timeout=90.0,
        )
        self._stacks.append(stack)
        await stack.start()
        return stack

    async def stop_stack(self, stack: Any) -> None:
        with contextlib.suppress(Exception):
            await stack.stop()
        if stack in self._stacks:
            self._stacks.remove(stack)

    async def close(self) -> None:
        await stop_all(self.chain)
        self.chain.clear()
        for stack in list(self._stacks):
            await self.stop_stack(stack)

    def worker_spec(self, **spec: Any) -> dict[str, Any]:
        """A worker spec with the run's secret, tag and time bound."""
        base = {"secret": self.secret, "tag": self.tag, "max_seconds": self.sizes.max_child_seconds}
        return {**base, **spec}


@contextlib.asynccontextmanager
async def context(*, sizes: Sizes, quick: bool) -> AsyncIterator[Context]:
    db = DynamoDBLocal()
    await db.start()
    ctx = Context(sizes=sizes, quick=quick, dynamodb=db)
    try:
        yield ctx
    finally:
        await ctx.close()
        db.stop()
