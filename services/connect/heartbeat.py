"""One heartbeat schedule for every socket of a connect pod (not a task per socket).

Each socket is pinged every ``STREAMER_WS_HEARTBEAT_SECONDS`` from the moment it opened
and closed with 4000 after ``STREAMER_WS_MISSED_PONGS`` pings in a row without an
answer. Rather than one sleeping task per socket (thousands of timers and wake-ups), one
loop keeps the sockets in a queue ordered by when each is next due: since every socket
has the same interval, a socket re-queued at ``now + interval`` always goes to the back,
so the queue stays sorted without a heap. Each tick wakes at most once per
:data:`RESOLUTION_FRACTION` of the interval and handles every socket due by then, so a
ping is late by at most that fraction, never early.

What one tick decides for one socket is :class:`Pulse` (pure, tested without sockets);
the socket itself (``ClientConnection.beat``) writes the ping and closes on a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from collections.abc import Callable
from typing import Final, Protocol

from streamer.tasks import Background

log = logging.getLogger(__name__)

#: A tick handles every socket due within this fraction of the interval (pings are at
#: most that late), so sockets opened close together share one wake-up.
RESOLUTION_FRACTION: Final = 0.05
#: ... but never wait more than this for a late-due socket.
MAX_RESOLUTION_SECONDS: Final = 0.25


class Beat(enum.Enum):
    PING = "ping"  # send a ping now
    WAIT = "wait"  # the previous ping is still being written: send none this tick
    TIMEOUT = "timeout"  # too many pings unanswered: close with 4000


class Pulse:
    """The heartbeat state of one socket: when it was last pinged, how many went unanswered.

    Any frame from the client counts as an answer, not only a pong (a client that is
    talking is alive). A ping still waiting to be written at the next tick (the peer
    stopped reading) counts as missed.
    """

    __slots__ = ("missed", "ping_sent")

    def __init__(self) -> None:
        self.missed = 0
        self.ping_sent: float | None = None

    def tick(self, *, now: float, last_activity: float, ping_pending: bool, missed_pongs: int) -> Beat:
        if self.ping_sent is not None and (last_activity < self.ping_sent or ping_pending):
            self.missed += 1
        else:
            self.missed = 0
        if self.missed >= missed_pongs:
            return Beat.TIMEOUT
        if ping_pending:
            return Beat.WAIT
        self.ping_sent = now
        return Beat.PING


class Beating(Protocol):
    """What the schedule needs of a socket."""

    @property
    def closing(self) -> bool: ...

    def beat(self, now: float, missed_pongs: int) -> bool:
        """One heartbeat tick; False when the socket needs no more (it is closing)."""
        ...


class HeartbeatSchedule:
    """Pings every registered socket every ``interval`` seconds from one loop."""

    def __init__(
        self, *, interval: float, missed_pongs: int, clock: Callable[[], float] | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.missed_pongs = missed_pongs
        self.resolution = min(interval * RESOLUTION_FRACTION, MAX_RESOLUTION_SECONDS)
        self._clock = clock
        self._due: collections.deque[tuple[float, Beating]] = collections.deque()
        self._wake = asyncio.Event()
        self._loop = Background("connect heartbeat")

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, conn: Beating) -> None:
        """Ping ``conn`` one interval from now, and every interval after (until it closes)."""
        self._due.append((self.now() + self.interval, conn))
        self._wake.set()

    def next_due(self) -> float | None:
        return self._due[0][0] if self._due else None

    def tick(self, now: float) -> int:
        """Beat every socket due by ``now``; returns how many were beaten.

        A socket that is closing is dropped here (nothing else removes it: a closed
        socket leaves the queue at its next due time, so removal is O(1)).
        """
        due = self._due
        beaten = 0
        while due and due[0][0] <= now:
            _, conn = due.popleft()
            if conn.closing:
                continue
            beaten += 1
            try:
                again = conn.beat(now, self.missed_pongs)
            except Exception:
                log.exception("heartbeat tick failed for one socket")
                again = not conn.closing
            if again:
                due.append((now + self.interval, conn))
        return beaten

    async def run(self) -> None:
        while True:
            first = self.next_due()
            if first is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = first + self.resolution - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            self.tick(self.now())

    def start(self) -> None:
        self._loop.start(self.run())

    async def stop(self) -> None:
        await self._loop.stop()
