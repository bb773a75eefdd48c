"""Progress coalescing and rate limiting (ProgressReporter), without any I/O."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from services.processor.progress import ProgressReporter


class Capture:
    """Collects published frames with the monotonic time they were published at."""

    def __init__(self, *, delay: float = 0.0, ok: bool = True) -> None:
        self.frames: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.delay = delay
        self.ok = ok

    async def __call__(self, frame: dict[str, Any]) -> bool:
        self.times.append(time.monotonic())
        self.frames.append(frame)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.ok

    @property
    def percentages(self) -> list[float]:
        return [f["percentage"] for f in self.frames]

    @property
    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_report_is_sent_at_once_with_seq_1() -> None:
    out = Capture()
    rep = ProgressReporter(request_id="r1", publish=out, interval=10.0)
    rep.report(0, "starting")
    await settle()
    assert out.frames == [
        {
            "type": "progress",
            "request_id": "r1",
            "percentage": 0,
            "message": "starting",
            "timestamp": out.frames[0]["timestamp"],
            "seq": 1,
        }
    ]
    await rep.close()


async def test_a_burst_is_coalesced_to_first_and_latest() -> None:
    out = Capture()
    rep = ProgressReporter(request_id="r1", publish=out, interval=10.0)
    for pct in range(1, 51):
        rep.report(pct, f"step {pct}")
    await settle()
    last = await rep.close()
    # The first is never coalesced; the rest collapse into the latest, flushed by close().
    assert out.percentages == [1, 50]
    assert out.seqs == [1, 2]
    assert rep.coalesced == 48
    assert last is not None and last["seq"] == 2 and last["percentage"] == 50


async def test_final_100_percent_goes_out_at_once_despite_the_rate_limit() -> None:
    out = Capture()
    rep = ProgressReporter(request_id="r1", publish=out, interval=10.0)
    rep.report(10, "a")
    await settle()
    rep.report(40, "b")
    rep.report(100, "done")
    await settle()
    assert out.percentages == [10, 100], "40 was superseded by the final report"
    await rep.close()
    assert out.percentages == [10, 100]


async def test_frames_respect_the_interval_and_latest_wins() -> None:
    out = Capture()
    interval = 0.05
    rep = ProgressReporter(request_id="r1", publish=out, interval=interval)
    for pct in range(0, 99):
        rep.report(pct, "")
        await asyncio.sleep(0.002)
    await rep.close()
    assert out.percentages[0] == 0
    assert out.percentages[-1] == 98, "the latest report is the last frame before the end"
    assert len(out.frames) + rep.coalesced == 99, "every report is either sent or superseded"
    assert out.seqs == list(range(1, len(out.frames) + 1)), "seq strictly increasing, no gaps"
    assert out.percentages == sorted(out.percentages)
    # Every frame after the first, except the one flushed by close(), waited a full interval.
    gaps = [b - a for a, b in zip(out.times[:-2], out.times[1:-1], strict=True)]
    assert all(gap >= interval * 0.99 for gap in gaps), gaps


async def test_zero_interval_sends_everything_in_order() -> None:
    out = Capture()
    rep = ProgressReporter(request_id="r1", publish=out, interval=0.0)
    for pct in range(5):
        rep.report(pct, "")
        await settle()
    await rep.close()
    assert out.percentages == [0, 1, 2, 3, 4]


async def test_slow_delivery_does_not_block_reports_and_only_the_latest_waits() -> None:
    out = Capture(delay=0.05)
    rep = ProgressReporter(request_id="r1", publish=out, interval=0.0)
    for pct in range(20):
        rep.report(pct, "")  # a plain call: the handler's stream is never held up by delivery
    await rep.close()
    assert out.percentages == [0, 19]


async def test_start_seq_continues_a_previous_attempt() -> None:
    out = Capture()
    rep = ProgressReporter(request_id="r1", publish=out, interval=0.0, start_seq=7)
    rep.report(5, "")
    await rep.close()
    assert out.seqs == [8]


async def test_close_without_flush_drops_what_waits() -> None:
    out = Capture()
    rep = ProgressReporter(request_id="r1", publish=out, interval=10.0)
    rep.report(1, "")
    await settle()
    rep.report(2, "")
    await rep.close(flush=False)
    assert out.percentages == [1]


async def test_reports_after_close_are_ignored() -> None:
    out = Capture()
    rep = ProgressReporter(request_id="r1", publish=out, interval=0.0)
    await rep.close()
    rep.report(50, "")
    await settle()
    assert out.frames == []


async def test_persistence_is_throttled_and_skips_the_close_flush() -> None:
    out = Capture()
    saved: list[dict[str, Any]] = []

    async def persist(progress: dict[str, Any]) -> None:
        saved.append(progress)

    rep = ProgressReporter(request_id="r1", publish=out, persist=persist, interval=0.0, persist_interval=60.0)
    for pct in range(5):
        rep.report(pct, "m", {"step": pct})
        await settle()
    await rep.close()
    assert len(out.frames) == 5
    # Ended within its first persist interval: no progress write (the final one rides on complete).
    assert saved == []
    assert out.frames[2]["metadata"] == {"step": 2}


async def test_the_latest_progress_is_persisted_once_per_interval_after_the_first_frame() -> None:
    out = Capture()
    saved: list[tuple[float, dict[str, Any]]] = []
    started = time.monotonic()

    async def persist(progress: dict[str, Any]) -> None:
        saved.append((time.monotonic() - started, progress))

    rep = ProgressReporter(request_id="r1", publish=out, persist=persist, interval=0.0, persist_interval=0.3)
    for pct in (10, 20, 30):
        rep.report(pct, "m")
        await settle()
    assert saved == []  # not before the interval
    await asyncio.sleep(0.45)
    assert [p["percentage"] for _, p in saved] == [30]  # the latest frame, once
    assert saved[0][0] >= 0.3
    await asyncio.sleep(0.4)
    assert len(saved) == 1  # nothing new reported: nothing written
    rep.report(40, "m")
    rep.report(50, "m")
    await settle()
    await asyncio.sleep(0.45)
    assert [p["percentage"] for _, p in saved] == [30, 50]
    await rep.close()
    assert [p["seq"] for _, p in saved] == [3, 4]  # 40 was coalesced into 50


async def test_close_stops_a_waiting_persist() -> None:
    out = Capture()
    saved: list[dict[str, Any]] = []

    async def persist(progress: dict[str, Any]) -> None:
        saved.append(progress)

    rep = ProgressReporter(request_id="r1", publish=out, persist=persist, interval=0.0, persist_interval=0.2)
    rep.report(10, "m")
    await settle()
    await rep.close()
    await asyncio.sleep(0.3)
    assert saved == [] and out.percentages == [10]


async def test_persist_failure_does_not_stop_progress() -> None:
    out = Capture()

    async def persist(progress: dict[str, Any]) -> None:
        raise RuntimeError("dynamodb down")

    rep = ProgressReporter(request_id="r1", publish=out, persist=persist, interval=0.0, persist_interval=0.0)
    rep.report(1, "")
    await settle()
    rep.report(2, "")
    await rep.close()
    assert out.percentages == [1, 2]


@pytest.mark.parametrize("ok", [True, False])
async def test_failed_deliveries_are_counted(ok: bool) -> None:
    out = Capture(ok=ok)
    rep = ProgressReporter(request_id="r1", publish=out, interval=0.0)
    rep.report(1, "")
    await rep.close()
    assert rep.sent == 1
    assert rep.failed == (0 if ok else 1)


def _first_progress() -> tuple[float, float]:
    from prometheus_client import REGISTRY

    count = REGISTRY.get_sample_value("streamer_processor_first_progress_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("streamer_processor_first_progress_seconds_sum") or 0.0
    return count, total


async def test_the_first_frame_of_a_request_is_timed_from_its_acceptance() -> None:
    """The time-to-first-progress SLO (docs/slo.md): once per request, from created_at."""
    before = _first_progress()
    out = Capture()
    rep = ProgressReporter(request_id="r1", publish=out, interval=0.0, created_at=time.time() - 2.0)
    rep.report(10)
    await settle()
    rep.report(20)
    await rep.close()
    count, total = _first_progress()
    assert count - before[0] == 1 and total - before[1] >= 2.0
    # a later attempt continues the numbering: it is not the request's first frame
    again = ProgressReporter(request_id="r1", publish=out, start_seq=2, created_at=time.time() - 9.0)
    again.report(30)
    await again.close()
    assert _first_progress()[0] == count
