"""``$resume`` builds a bounded number of pages at once (a reconnect storm costs the router
bounded memory), and a caller whose deadline ran out waiting is told to try again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from services.router.call import Call
from services.router.system_actions import SystemActions


class BlockingTable:
    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.release = asyncio.Event()

    async def resume_page(self, **_: Any) -> tuple[list[Any], None]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        return [], None


def call(i: int, *, deadline: float | None = None) -> Call:
    return Call(
        connection_id=f"c{i}",
        user_id=f"u{i}",
        tenant_id="t",
        permissions=(),
        action="$resume",
        request_id=f"resume-{i}",
        payload={},
        metadata={},
        deadline=deadline,
    )


async def test_at_most_the_concurrency_of_pages_are_built_at_once() -> None:
    table = BlockingTable()
    store = SimpleNamespace(requests=SimpleNamespace(tables=lambda: [table]))
    actions = SystemActions(store=store, resume_concurrency=4)  # type: ignore[arg-type]
    running = [asyncio.create_task(actions.resume(call(i))) for i in range(20)]
    await asyncio.sleep(0.05)
    assert table.most == 4
    table.release.set()
    assert await asyncio.gather(*running) == [[]] * 20
    assert table.most == 4


async def test_a_caller_whose_deadline_passed_while_waiting_is_told_to_try_again() -> None:
    table = BlockingTable()
    store = SimpleNamespace(requests=SimpleNamespace(tables=lambda: [table]))
    actions = SystemActions(store=store, resume_concurrency=1)  # type: ignore[arg-type]
    first = asyncio.create_task(actions.resume(call(0)))
    await asyncio.sleep(0.01)
    late = asyncio.create_task(actions.resume(call(1, deadline=1.2)))
    await asyncio.sleep(0.3)
    table.release.set()
    await first
    [frame] = await late
    assert frame["type"] == "error"
    assert frame["error"]["code"] == "SERVICE_UNAVAILABLE" and frame["error"]["retryable"] is True
