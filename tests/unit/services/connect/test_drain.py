"""A drain spreads its sockets' reconnects: the window, the close reason, the hint parsed back."""

from __future__ import annotations

import pytest

from services.connect.drain import reconnect_window
from services.connect.upgrade import SHUTDOWN_REASON
from streamer import protocol


def test_the_window_grows_with_the_sockets_and_is_capped() -> None:
    assert reconnect_window(500, rate=250, cap=30) == 2.0
    assert reconnect_window(100_000, rate=250, cap=30) == 30
    assert reconnect_window(0, rate=250, cap=30) == 0.0
    assert reconnect_window(500, rate=0, cap=30) == 0.0  # rate 0: no hint at all


@pytest.mark.parametrize("seconds", [0.001, 0.25, 1.5, 29.999])
def test_the_reason_carries_the_hint_and_reads_back(seconds: float) -> None:
    reason = protocol.drain_close_reason(SHUTDOWN_REASON, reconnect_after=seconds)
    assert reason.startswith(SHUTDOWN_REASON)
    assert len(reason.encode()) <= 123  # a WebSocket close reason's limit
    assert protocol.reconnect_hint(reason) == pytest.approx(int(seconds * 1000) / 1000)


def test_no_hint_without_a_window_or_in_other_reasons() -> None:
    assert protocol.drain_close_reason(SHUTDOWN_REASON, reconnect_after=0) == SHUTDOWN_REASON
    assert protocol.reconnect_hint(SHUTDOWN_REASON) is None
    assert protocol.reconnect_hint(None) is None
    assert protocol.reconnect_hint("rate limited") is None
