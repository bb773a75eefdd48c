"""The pod's one heartbeat schedule and what one tick decides for one socket (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from services.connect.heartbeat import Beat, HeartbeatSchedule, Pulse


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeSocket:
    """Answers (or not) like a client; closes itself on a timeout, as ClientConnection does."""

    def __init__(self, name: str, *, answers: bool = True) -> None:
        self.name = name
        self.answers = answers
        self.closing = False
        self.pulse = Pulse()
        self.last_activity = 0.0
        self.pings: list[float] = []

    def beat(self, now: float, missed_pongs: int) -> bool:
        verdict = self.pulse.tick(
            now=now, last_activity=self.last_activity, ping_pending=False, missed_pongs=missed_pongs
        )
        if verdict is Beat.TIMEOUT:
            self.closing = True
            return False
        self.pings.append(now)
        if self.answers:
            self.last_activity = now + 0.001
        return True


def test_a_socket_is_pinged_every_interval_from_when_it_was_added() -> None:
    clock = Clock()
    schedule = HeartbeatSchedule(interval=10.0, missed_pongs=2, clock=clock)
    a = FakeSocket("a")
    schedule.add(a)
    clock.now = 103.0
    b = FakeSocket("b")
    schedule.add(b)
    assert schedule.next_due() == 110.0
    assert schedule.tick(109.9) == 0  # never early
    assert schedule.tick(110.0) == 1
    assert (a.pings, b.pings) == ([110.0], [])
    assert schedule.tick(113.0) == 1
    assert schedule.tick(120.0) == 1
    assert schedule.tick(123.0) == 1
    assert (a.pings, b.pings) == ([110.0, 120.0], [113.0, 123.0])
    assert len(schedule) == 2


def test_one_tick_handles_every_socket_due_and_the_queue_stays_in_order() -> None:
    clock = Clock()
    schedule = HeartbeatSchedule(interval=5.0, missed_pongs=2, clock=clock)
    sockets = []
    for i in range(1000):
        clock.now = 100.0 + i / 1000
        sockets.append(FakeSocket(str(i)))
        schedule.add(sockets[-1])
    # A late tick (a loaded loop) catches up on all of them at once.
    assert schedule.tick(106.0) == 1000
    assert all(s.pings == [106.0] for s in sockets)
    assert schedule.next_due() == 111.0
    assert schedule.tick(111.0) == 1000


def test_a_silent_socket_times_out_after_the_missed_pongs_and_leaves_the_schedule() -> None:
    clock = Clock()
    schedule = HeartbeatSchedule(interval=1.0, missed_pongs=2, clock=clock)
    silent, talking = FakeSocket("silent", answers=False), FakeSocket("talking")
    schedule.add(silent)
    schedule.add(talking)
    for t in (101.0, 102.0, 103.0):
        schedule.tick(t)
    # Ping at 101 and 102 unanswered; at 103 the second miss closes it.
    assert silent.closing and silent.pings == [101.0, 102.0]
    assert not talking.closing and talking.pings == [101.0, 102.0, 103.0]
    assert len(schedule) == 1


def test_a_closed_socket_is_dropped_at_its_next_due_time_without_a_beat() -> None:
    clock = Clock()
    schedule = HeartbeatSchedule(interval=1.0, missed_pongs=2, clock=clock)
    gone = FakeSocket("gone")
    schedule.add(gone)
    gone.closing = True
    assert schedule.tick(101.0) == 0
    assert gone.pings == [] and len(schedule) == 0


def test_pulse_counts_a_ping_still_being_written_as_missed_and_sends_none_meanwhile() -> None:
    pulse = Pulse()
    assert pulse.tick(now=1.0, last_activity=0.0, ping_pending=False, missed_pongs=3) is Beat.PING
    # The client answered, but the ping task is still waiting on the transport.
    assert pulse.tick(now=2.0, last_activity=1.5, ping_pending=True, missed_pongs=3) is Beat.WAIT
    assert pulse.tick(now=3.0, last_activity=1.5, ping_pending=True, missed_pongs=3) is Beat.WAIT
    assert pulse.tick(now=4.0, last_activity=1.5, ping_pending=True, missed_pongs=3) is Beat.TIMEOUT


def test_pulse_any_frame_after_the_ping_is_an_answer() -> None:
    pulse = Pulse()
    pulse.tick(now=1.0, last_activity=0.0, ping_pending=False, missed_pongs=2)
    assert pulse.tick(now=2.0, last_activity=0.5, ping_pending=False, missed_pongs=2) is Beat.PING
    assert pulse.missed == 1
    assert pulse.tick(now=3.0, last_activity=2.1, ping_pending=False, missed_pongs=2) is Beat.PING
    assert pulse.missed == 0


async def test_the_loop_wakes_for_a_socket_added_while_idle_and_stops() -> None:
    schedule = HeartbeatSchedule(interval=0.02, missed_pongs=2)
    schedule.start()
    await asyncio.sleep(0.01)  # idle: nothing to ping
    sock = FakeSocket("late")
    schedule.add(sock)
    for _ in range(500):
        if len(sock.pings) >= 2:
            break
        await asyncio.sleep(0.01)
    await schedule.stop()
    assert len(sock.pings) >= 2


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        HeartbeatSchedule(interval=0, missed_pongs=2)
