"""One claimed request on its way through the processor (queue → handler → outcome)."""

from __future__ import annotations

import asyncio
import enum

from streamer.store.requests import RequestRecord


class StopReason(enum.Enum):
    """Why a job must stop before its handler finished; the strongest reason wins."""

    SHUTDOWN = 1  # this processor is draining: hand the request back (same attempt)
    CANCEL = 2  # the client asked: end the handler call, then CANCELLED
    LOST = 3  # our claim is gone (expired and taken over): stop, write nothing


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class Job:
    """A request this processor has claimed (status PROCESSING, owner = us, ``attempt``).

    ``record`` is the claimed record (refreshed by each renew). Every write about it
    is conditioned on (PROCESSING, owner, attempt), so whatever this object does
    after the claim was lost is refused by the store.
    """

    def __init__(self, record: RequestRecord, *, claimed_at: float) -> None:
        self.record = record
        self.claimed_at = claimed_at
        self.state = JobState.QUEUED
        self.stop_reason: StopReason | None = None
        self.stopped = asyncio.Event()

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def attempt(self) -> int:
        return self.record.attempt

    @property
    def owner(self) -> str:
        return self.record.owner or ""

    @property
    def action(self) -> str:
        return self.record.action

    def request_stop(self, reason: StopReason) -> None:
        """Ask the job to stop; a stronger reason overrides a weaker one."""
        if self.stop_reason is None or reason.value > self.stop_reason.value:
            self.stop_reason = reason
        self.stopped.set()

    def __repr__(self) -> str:
        return f"Job({self.request_id!r}, attempt={self.attempt}, state={self.state.value})"
