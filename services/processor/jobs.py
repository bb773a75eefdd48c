"""One claimed request on its way through the processor (queue → handler → outcome)."""

from __future__ import annotations

import asyncio
import enum
import time

from services.processor.budget import Slot
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
    """A request this processor has claimed (status PROCESSING, owner = us, ``attempt``, ``token``).

    ``record`` is the claimed record (refreshed by each renew). Every write about it
    is conditioned on (PROCESSING, owner, attempt, claim token), so whatever this
    object does after the claim was lost is refused by the store — even when this
    processor claimed the request again since (a new claim, a new token).

    ``deadline`` (``time.monotonic()``) is when the claim runs out unless renewed: the
    claim's ``claim_expires_at`` as written with this process's own clock. The claim
    keeper stops the job locally before it, so a job never runs on a claim others may
    already consider expired. ``predecessor`` is an earlier job of ours for the same
    request whose claim lapsed: this one starts its handler only once that one ended.
    """

    def __init__(
        self,
        record: RequestRecord,
        *,
        claimed_at: float,
        predecessor: Job | None = None,
        slot: Slot | None = None,
    ) -> None:
        self.claimed_at = claimed_at
        #: The claim's place in this processor's budget (:mod:`.budget`), given back when
        #: the claim keeper stops holding the claim.
        self.slot = slot
        self.state = JobState.QUEUED
        self.stop_reason: StopReason | None = None
        self.stopped = asyncio.Event()
        self.finished = asyncio.Event()
        self.predecessor = predecessor
        self.deadline = float("inf")
        #: When the claim keeper renews next (``time.monotonic()``), and whether it is at it.
        self.renew_at = float("inf")
        self.renewing = False
        self.record = record
        self.refresh(record)

    def refresh(self, record: RequestRecord) -> None:
        """Take a renewed record; the deadline moves with its ``claim_expires_at``."""
        self.record = record
        if record.claim_expires_at is not None:
            self.deadline = time.monotonic() + (record.claim_expires_at - time.time())

    @property
    def token(self) -> str | None:
        return self.record.claim_token

    @property
    def request_id(self) -> str:
        """The table key (tenant-scoped): every store call and subscription uses it."""
        return self.record.request_id

    @property
    def client_request_id(self) -> str:
        """The id the client gave: every frame and the handler's ``Invoke`` carry it."""
        return self.record.client_request_id

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
