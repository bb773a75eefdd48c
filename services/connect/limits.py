"""Per-connection limits of the gateway, as pure objects (tested without sockets).

Defaults that are not settings live here, next to the policy that uses them:

- a frame up to ``ws_max_frame_bytes`` is handled; one over it is answered with
  ``PAYLOAD_TOO_LARGE`` and the socket stays open (a client that sent one big document
  by mistake should learn why, not lose its other requests); one over
  :data:`HARD_LIMIT_FACTOR` times the limit is abuse and closes the socket with 1009.
  aiohttp reads at most two bytes more than that hard limit, so memory per frame stays
  bounded even for a client that announces a gigabyte.
- :data:`MAX_IN_FLIGHT` routes per connection run concurrently (so a slow sync request
  never blocks a ``$cancel`` behind it); more are refused with ``RATE_LIMITED``.
- the token bucket refills ``ws_rate_limit`` tokens per second up to ``ws_rate_burst``;
  every frame costs one token, valid or not (malformed floods are abuse too).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Final

#: A frame over this many times ``ws_max_frame_bytes`` closes the socket with 1009.
HARD_LIMIT_FACTOR: Final = 4
#: Concurrent Route calls per connection before new messages get RATE_LIMITED.
MAX_IN_FLIGHT: Final = 32
#: Seconds a close handshake may take before the transport is aborted.
CLOSE_TIMEOUT_SECONDS: Final = 5.0
#: Seconds a flushing close (Disconnect, drain) waits for queued frames to be written.
FLUSH_TIMEOUT_SECONDS: Final = 2.0
#: The longest close reason the WebSocket protocol allows (a close frame is <= 125 bytes).
MAX_CLOSE_REASON_BYTES: Final = 123


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    ``rate == 0`` turns the limit off (benchmarks); :meth:`take` then always succeeds.
    The clock is injectable so tests step time instead of sleeping.
    """

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ValueError("rate must not be negative")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False (nothing spent) otherwise."""
        if not self.enabled:
            return True
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until :meth:`take` would succeed (0 when it would now)."""
        if not self.enabled or self._tokens >= cost:
            return 0.0
        return (cost - self._tokens) / self.rate


class FrameVerdict(enum.Enum):
    OK = "ok"
    TOO_LARGE = "too_large"  # answer PAYLOAD_TOO_LARGE, keep the socket
    CLOSE = "close"  # close with 1009


class FramePolicy:
    """What to do with a client frame of a given size."""

    __slots__ = ("hard_limit", "limit")

    def __init__(self, *, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1 byte")
        self.limit = limit
        self.hard_limit = limit * HARD_LIMIT_FACTOR

    @property
    def max_msg_size(self) -> int:
        """aiohttp's ``max_msg_size``, just above the hard limit so the gateway sees such frames.

        aiohttp refuses a frame of ``max_msg_size`` bytes in some versions and only larger
        ones in others; ``+ 2`` lets a frame one byte over the hard limit through in both,
        so it gets the gateway's close reason. Larger ones aiohttp closes with 1009 itself.
        """
        return self.hard_limit + 2

    def check(self, size: int) -> FrameVerdict:
        if size > self.hard_limit:
            return FrameVerdict.CLOSE
        if size > self.limit:
            return FrameVerdict.TOO_LARGE
        return FrameVerdict.OK


class Strikes:
    """RATE_LIMITED answers in a row; the one after ``allowed`` closes the socket (1008).

    Any frame that passes the bucket resets the count, so a client that backs off
    after being told to is never closed.
    """

    __slots__ = ("allowed", "count")

    def __init__(self, *, allowed: int) -> None:
        self.allowed = allowed
        self.count = 0

    def hit(self) -> bool:
        """Record one limited frame; True when the connection must now be closed."""
        self.count += 1
        return self.count > self.allowed

    def reset(self) -> None:
        self.count = 0


def close_reason(reason: str) -> str:
    """``reason`` cut to what fits in a close frame (whole UTF-8 characters only)."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return data[:MAX_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


def valid_close_code(code: int) -> bool:
    """Whether a server may send ``code`` in a close frame (RFC 6455 §7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8, without encoding ASCII text (the common case)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", errors="surrogatepass"))
