"""streamer.retry (the one backoff policy) and streamer.tasks (supervised background tasks)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streamer.retry import Backoff
from streamer.tasks import Background, TaskSet, every


def test_backoff_doubles_per_failure_up_to_the_cap() -> None:
    b = Backoff(base=1.0, cap=10.0, jitter=0.2)
    assert [b.delay(n, rand=0.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert b.delay(1, rand=0.999) == pytest.approx(0.8, abs=1e-3)
    assert b.delay(10_000, rand=0.0) == 10.0  # no overflow however many failures
    for failures in range(1, 10):
        raw = min(10.0, 2 ** (failures - 1))
        samples = [b.delay(failures) for _ in range(200)]
        assert all(0.8 * raw <= d <= raw for d in samples)
        assert max(samples) > min(samples)  # there is jitter


async def test_background_stop_cancels_and_waits() -> None:
    ended = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    bg = Background("t")
    bg.start(forever())
    await asyncio.sleep(0)
    assert bg.running
    with pytest.raises(RuntimeError):
        bg.start(forever())
    await bg.stop()
    assert ended.is_set() and not bg.running
    await bg.stop()  # idempotent


async def test_every_logs_a_failed_round_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    done = asyncio.Event()

    async def round_() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise ValueError("boom")
        if len(rounds) == 3:
            done.set()

    bg = Background("loop")
    with caplog.at_level(logging.ERROR):
        bg.start(every(0.001, round_, what="test round"))
        await asyncio.wait_for(done.wait(), 30)
        await bg.stop()
    assert len(rounds) >= 3
    assert any(r.getMessage() == "test round failed" for r in caplog.records)


async def test_task_set_keeps_tasks_until_done_and_cancels_them() -> None:
    tasks = TaskSet()
    quick = tasks.spawn(asyncio.sleep(0))
    slow = tasks.spawn(asyncio.Event().wait())
    await quick
    await asyncio.sleep(0)
    assert len(tasks) == 1
    tasks.cancel()
    await tasks.wait()
    assert slow.cancelled() and len(tasks) == 0


async def test_task_set_drain_lets_quick_tasks_finish_and_cancels_the_rest() -> None:
    async def at_once() -> str:
        return "done"

    tasks = TaskSet()
    quick = tasks.spawn(at_once())
    slow = tasks.spawn(asyncio.Event().wait())
    await tasks.drain(timeout=0.5)
    assert quick.result() == "done" and slow.cancelled() and len(tasks) == 0
