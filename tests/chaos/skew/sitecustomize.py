"""A process whose wall clock is off by ``STREAMER_TEST_CLOCK_OFFSET_SECONDS`` (chaos: clock skew).

Python imports ``sitecustomize`` at start-up from its path; the chaos run puts this
directory on one processor's ``PYTHONPATH`` only, so that processor's ``time.time()``
— every expiry it writes and every expiry it judges — runs ahead or behind the others,
as on a node whose clock drifted. The monotonic clock is left alone, as NTP leaves it.

gRPC needs one more step. Its Python layer turns a call's ``timeout`` into an absolute
deadline with ``time.time()``, and its C core compares that deadline with the *real*
clock — on a drifted node both would see the same wrong clock, here only Python would. With
the clock 5 s behind, every call with a timeout under 5 s (every ``Connections.Send``)
would expire before it left, so the skewed processor could deliver nothing: the first long
skew run "lost" 41 of 500 requests that way (COMPLETED, their clients never heard). So
gRPC's deadline helpers keep the real clock, which is what a drifted node's gRPC amounts to
(deadline and C core on the same clock).
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

    def _real_deadline(timeout: float | None) -> float | None:
        return None if timeout is None else _real_time() + timeout

    try:
        import grpc._channel as _sync_channel
        from grpc.aio import _channel, _interceptor, _utils
    except ImportError:  # not a process that uses gRPC
        pass
    else:
        for _module in (_utils, _channel, _interceptor):
            _module._timeout_to_deadline = _real_deadline  # type: ignore[attr-defined]
        _sync_channel._deadline = _real_deadline  # type: ignore[attr-defined]
