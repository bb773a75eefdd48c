"""A process whose wall clock is off by ``STREAMER_TEST_CLOCK_OFFSET_SECONDS`` (chaos: clock skew).

Python imports ``sitecustomize`` at start-up from its path; the chaos run puts this
directory on one processor's ``PYTHONPATH`` only, so that processor's ``time.time()``
— every expiry it writes and every expiry it judges — runs ahead or behind the others,
as on a node whose clock drifted. The monotonic clock is left alone, as NTP leaves it.
"""

from __future__ import annotations

import os
import time

_OFFSET = float(os.environ.get("STREAMER_TEST_CLOCK_OFFSET_SECONDS") or 0.0)

if _OFFSET:
    _real_time = time.time
    _real_time_ns = time.time_ns

    def _skewed_time() -> float:
        return _real_time() + _OFFSET

    def _skewed_time_ns() -> int:
        return _real_time_ns() + int(_OFFSET * 1e9)

    time.time = _skewed_time
    time.time_ns = _skewed_time_ns
