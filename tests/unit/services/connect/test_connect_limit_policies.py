"""The gateway's pure limit policies: token bucket, frame size, strikes, close frames."""

from __future__ import annotations

import pytest

from services.connect.limits import (
    HARD_LIMIT_FACTOR,
    MAX_CLOSE_REASON_BYTES,
    FramePolicy,
    FrameVerdict,
    Strikes,
    TokenBucket,
    close_reason,
    utf8_size,
    valid_close_code,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() is True
    assert bucket.take() is False
    clock.now += 100  # never more than the burst saved up
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_bucket_refused_take_spends_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
    assert bucket.take()
    clock.now += 0.6
    assert not bucket.take()
    clock.now += 0.4
    assert bucket.take()  # 0.6 + 0.4 = one whole token: the refused take did not consume


def test_bucket_rate_zero_is_off() -> None:
    bucket = TokenBucket(rate=0.0, burst=1, clock=Clock())
    assert not bucket.enabled
    assert all(bucket.take() for _ in range(10_000))
    assert bucket.retry_after() == 0.0


def test_bucket_clock_going_backwards_adds_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
    assert bucket.take()
    clock.now -= 50
    assert not bucket.take()


@pytest.mark.parametrize(("rate", "burst"), [(-1.0, 1), (1.0, 0)])
def test_bucket_rejects_bad_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)


def test_frame_policy_boundaries() -> None:
    policy = FramePolicy(limit=1000)
    assert policy.hard_limit == 1000 * HARD_LIMIT_FACTOR == 4000
    assert policy.check(0) is FrameVerdict.OK
    assert policy.check(1000) is FrameVerdict.OK
    assert policy.check(1001) is FrameVerdict.TOO_LARGE
    assert policy.check(4000) is FrameVerdict.TOO_LARGE
    assert policy.check(4001) is FrameVerdict.CLOSE
    # aiohttp must let a frame one byte over the hard limit through to the gateway.
    assert policy.max_msg_size > 4001


def test_strikes_close_after_the_allowed_answers_and_reset() -> None:
    strikes = Strikes(allowed=2)
    assert strikes.hit() is False
    assert strikes.hit() is False
    strikes.reset()
    assert strikes.hit() is False
    assert strikes.hit() is False
    assert strikes.hit() is True


def test_close_reason_fits_a_close_frame_on_character_boundaries() -> None:
    assert close_reason("short") == "short"
    long = "é" * 100  # 200 bytes
    cut = close_reason(long)
    assert len(cut.encode()) <= MAX_CLOSE_REASON_BYTES
    assert cut == "é" * (MAX_CLOSE_REASON_BYTES // 2)


def test_valid_close_codes() -> None:
    for code in (1000, 1001, 1008, 1009, 1011, 1013, 3000, 4000, 4001, 4999):
        assert valid_close_code(code)
    for code in (0, 999, 1004, 1005, 1006, 1010, 1015, 2000, 5000):
        assert not valid_close_code(code)


def test_utf8_size() -> None:
    assert utf8_size("abc") == 3
    assert utf8_size("é€😀") == 2 + 3 + 4
