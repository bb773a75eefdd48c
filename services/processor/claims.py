"""From stream records to claimed requests, and keeping those claims alive.

A stream record means "claim this" when its ``NewImage`` is PENDING and its
``OldImage`` was not PENDING at the same attempt: a new request (INSERT), a retry
(PROCESSING → PENDING with attempt + 1), or a request whose dead owner's claim was
released (PROCESSING → PENDING, same attempt). Our own claim's record (PENDING →
PROCESSING) and other edits of a pending request are not.

The claim is one conditional update ``PENDING → PROCESSING`` at that attempt and
past ``not_before``; of several processors (or a processor and a sweeper) offering
the same request, exactly one wins and the others are refused — that is what
makes the stream's at-least-once delivery harmless. A retry's record arrives
while its ``not_before`` is still ahead: the claim would be refused, so the
:class:`Claimer` schedules the offer for ``not_before`` instead of dropping it.

The :class:`ClaimKeeper` renews every claim this processor holds (queued or
running) every ``claim_seconds / 3``, each on its own schedule: per tick at most
``RENEW_CONCURRENCY`` calls in flight (the claims nearest their deadline first), and
no call outlives its claim (or a third of it, if that is longer). How many claims there are to renew is
bounded by :mod:`.budget`. A renew returns the record, so a
``cancel_requested`` set by ``$cancel`` is noticed there and the job is told to
stop; a refused renew means the claim expired and another processor took over,
and the job stops without writing anything. A claim that could not be renewed
(DynamoDB unreachable, throttled) stops its job *locally* when the claim's deadline
passes (``Job.deadline``, measured with this process's own clocks): the sweepers of
other processors take the request over only ``STREAMER_CLOCK_SKEW_SECONDS`` later,
and the old run has ended by then — two runs of one request never overlap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from services.processor import metrics
from services.processor.budget import ClaimBudget, Slot
from services.processor.jobs import Job, StopReason
from streamer.store.dynamo import deserialize_item
from streamer.store.errors import StoreError, TransitionRefused
from streamer.store.requests import PENDING, PROCESSING, RequestRecord, RequestStore
from streamer.tasks import Background, TaskSet

log = logging.getLogger(__name__)

#: Added to ``not_before`` when scheduling, so the claim's ``not_before <= now``
#: condition (evaluated with the same wall clock) holds when the timer fires.
SCHEDULE_SLACK_SECONDS = 0.005
_IMAGE_FIELDS = (
    "request_id",
    "status",
    "attempt",
    "not_before",
    "owner",
    "cancel_requested",
    "offer_until",
    "claim_token",
    "subscribed",
    "action",
    "tenant_id",
)
#: How long before its claim's deadline an unrenewed job is stopped. None: at the
#: deadline itself — the sweepers wait ``STREAMER_CLOCK_SKEW_SECONDS`` beyond it, which
#: is the time the handler call's cancel has to reach the handler; stopping earlier
#: only turned slow renewals on a loaded machine into needless recoveries.
LAPSE_MARGIN_SECONDS = 0.0
#: Renewal calls in flight at once per processor.
RENEW_CONCURRENCY = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
    """A request that may be claimed at ``attempt`` (not before ``not_before``)."""

    request_id: str
    attempt: int
    not_before: float | None = None
    #: A new request the router offered to a processor directly: the stream reader
    #: claims it only if no claim shows up on the stream before this wall-clock time.
    offer_until: float | None = None
    source: str = "stream"
    #: The request's action and tenant (which budget slot a claim takes); None when unknown.
    action: str | None = None
    tenant: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CancelSignal:
    """A running request's ``$cancel``, as seen on the stream."""

    request_id: str
    owner: str
    attempt: int
    token: str | None = None


def _image(record: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    raw = (record.get("dynamodb") or {}).get(name)
    if not raw:
        return None
    return deserialize_item({k: v for k, v in raw.items() if k in _IMAGE_FIELDS})


def candidate_from_record(record: Mapping[str, Any]) -> Candidate | None:
    """The claim a stream record calls for, or None (pure)."""
    if record.get("eventName") == "REMOVE":
        return None
    new = _image(record, "NewImage")
    if not new or new.get("status") != PENDING or "request_id" not in new:
        return None
    attempt = int(new.get("attempt", 1))
    old = _image(record, "OldImage")
    if old and old.get("status") == PENDING and int(old.get("attempt", 1)) == attempt:
        return None
    not_before = new.get("not_before")
    # Only the INSERT was offered; a later PENDING record (retry, release) keeps the
    # attribute on the item but was not offered to anyone.
    offer_until = new.get("offer_until") if old is None else None
    return Candidate(
        request_id=str(new["request_id"]),
        attempt=attempt,
        not_before=float(not_before) if not_before is not None else None,
        offer_until=float(offer_until) if offer_until is not None else None,
        action=str(new["action"]) if new.get("action") else None,
        tenant=str(new["tenant_id"]) if new.get("tenant_id") else None,
    )


def settled_from_record(record: Mapping[str, Any]) -> tuple[str, int] | None:
    """(request, attempt) a record shows leaving PENDING at that attempt (claimed, cancelled), or None.

    How the stream reader tells an offered request from an orphan: the claim that
    the offered processor made is itself a stream record of the same item, hence on
    the same shard right after the INSERT; seeing it, the reader drops its held
    candidate without a claim attempt of its own (pure).
    """
    old = _image(record, "OldImage")
    if not old or old.get("status") != PENDING or "request_id" not in old:
        return None
    attempt = int(old.get("attempt", 1))
    new = _image(record, "NewImage")
    if new and new.get("status") == PENDING and int(new.get("attempt", 1)) == attempt:
        return None
    return str(old["request_id"]), attempt


def cancel_from_record(record: Mapping[str, Any]) -> CancelSignal | None:
    """A record where a PROCESSING request just got ``cancel_requested`` (pure)."""
    new = _image(record, "NewImage")
    if not new or new.get("status") != PROCESSING or not new.get("cancel_requested"):
        return None
    old = _image(record, "OldImage")
    if old and old.get("cancel_requested"):
        return None
    return CancelSignal(
        request_id=str(new["request_id"]),
        owner=str(new.get("owner") or ""),
        attempt=int(new.get("attempt", 1)),
        token=str(new["claim_token"]) if new.get("claim_token") else None,
    )


def subscribed_from_record(record: Mapping[str, Any]) -> str | None:
    """The id of a PROCESSING request that just got its first subscriber (``$subscribe``'s mark), or None."""
    new = _image(record, "NewImage")
    if not new or new.get("status") != PROCESSING or not new.get("subscribed"):
        return None
    old = _image(record, "OldImage")
    if old and old.get("subscribed"):
        return None
    return str(new["request_id"])


def candidate_from_request(record: RequestRecord, *, source: str) -> Candidate:
    return Candidate(
        request_id=record.request_id,
        attempt=record.attempt,
        not_before=record.not_before,
        source=source,
        action=record.action,
        tenant=record.tenant_id,
    )


class Claimer:
    """Claims candidates for this worker and hands the won ones to ``on_claimed``.

    With a ``budget``, a claim is attempted only with a slot from it (see
    :mod:`.budget`); the won claim's slot goes to ``on_claimed`` with the record, and
    whoever holds the claim gives the slot back when it ends.
    """

    def __init__(
        self,
        *,
        requests: RequestStore,
        worker_id: str,
        claim_seconds: float,
        on_claimed: Callable[[RequestRecord, Slot | None], None],
        budget: ClaimBudget | None = None,
    ) -> None:
        self.budget = budget
        self.requests = requests
        self.worker_id = worker_id
        self.claim_seconds = claim_seconds
        self.on_claimed = on_claimed
        self.accepting = True
        self._timers: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._tasks = TaskSet()

    async def offer(self, cand: Candidate) -> bool:
        """Try to claim; True when won. Never raises for store trouble (the sweeper retries)."""
        if not self.accepting:
            return False
        now = time.time()
        if cand.not_before is not None and cand.not_before > now:
            self.schedule(cand, at=max(cand.not_before, cand.offer_until or 0.0))
            return False
        if cand.offer_until is not None and cand.offer_until > now:
            self.schedule(cand, at=cand.offer_until, why="held")
            return False
        # A claim attempt of ours now (an offer, say) supersedes a held or scheduled one.
        self.settle(cand.request_id, cand.attempt)
        slot: Slot | None = None
        if self.budget is not None:
            slot = self.budget.take(cand.action, cand.tenant)
            if slot is None:
                # Full: leave it PENDING for another processor, or our sweeper later.
                metrics.CLAIMS.labels("full").inc()
                return False
        record: RequestRecord | None = None
        try:
            record = await self._claim(cand)
        finally:
            if record is None and slot is not None:
                slot.release()
        if record is None:
            return False
        metrics.CLAIMS.labels("won").inc()
        # Even when stop() came while this claim was in flight: on_claimed owns the
        # record now (a draining processor hands it straight back), and the slot with it.
        self.on_claimed(record, slot)
        return True

    async def _claim(self, cand: Candidate) -> RequestRecord | None:
        """The one conditional claim; the claimed record, or None when not won."""
        try:
            return await self.requests.claim(
                cand.request_id, owner=self.worker_id, attempt=cand.attempt, claim_seconds=self.claim_seconds
            )
        except TransitionRefused as exc:
            current: RequestRecord | None = exc.current
            if (
                current is not None
                and current.status == PENDING
                and current.attempt == cand.attempt
                and current.not_before is not None
                and current.not_before > time.time()
            ):
                self.schedule(cand, at=current.not_before)
                return None
            metrics.CLAIMS.labels("refused").inc()
            return None
        except StoreError as exc:
            metrics.CLAIMS.labels("error").inc()
            log.warning("claim failed", extra={"request_id": cand.request_id, "error": str(exc)})
            return None

    def schedule(self, cand: Candidate, *, at: float, why: str = "deferred") -> None:
        """Offer ``cand`` again at wall-clock time ``at`` (once per request and attempt).

        ``why``: ``deferred`` (its ``not_before`` is ahead) or ``held`` (offered to a
        processor directly; claimed here only if :meth:`settle` is not called first).
        """
        key = (cand.request_id, cand.attempt)
        if key in self._timers or not self.accepting:
            return
        metrics.CLAIMS.labels(why).inc()
        delay = max(0.0, at - time.time()) + SCHEDULE_SLACK_SECONDS
        retry = dataclasses.replace(cand, not_before=None, offer_until=None, source="timer")
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key, retry)

    def settle(self, request_id: str, attempt: int) -> bool:
        """The request left PENDING at ``attempt`` (seen on the stream): drop its timer, if any."""
        handle = self._timers.pop((request_id, attempt), None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def _fire(self, key: tuple[str, int], cand: Candidate) -> None:
        self._timers.pop(key, None)
        self._tasks.spawn(self.offer(cand))

    @property
    def scheduled(self) -> int:
        return len(self._timers)

    def stop(self) -> None:
        """Claim nothing more; drop scheduled offers (the sweeper of any processor covers them)."""
        self.accepting = False
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._tasks.cancel()


class ClaimKeeper:
    """Renews the claims of every job this processor holds; notices cancels and take-overs."""

    def __init__(
        self,
        *,
        requests: RequestStore,
        worker_id: str,
        claim_seconds: float,
        on_stop: Callable[[Job], None] | None = None,
    ) -> None:
        self.requests = requests
        self.worker_id = worker_id
        self.claim_seconds = claim_seconds
        self.on_stop = on_stop
        self.jobs: dict[str, Job] = {}
        self._loop = Background(f"claims-{worker_id}")
        self._renewals = TaskSet()
        self._renew_slots = asyncio.Semaphore(RENEW_CONCURRENCY)
        #: Renewal calls in flight (at most RENEW_CONCURRENCY).
        self.renewing = 0

    @property
    def interval(self) -> float:
        return self.claim_seconds / 3

    @property
    def lapse_margin(self) -> float:
        return LAPSE_MARGIN_SECONDS

    def add(self, job: Job) -> None:
        """Hold ``job``'s claim. An older job of ours for the same request (its claim
        lapsed and we claimed the request again) is stopped: it may write nothing."""
        old = self.jobs.get(job.request_id)
        if old is not None and old is not job:
            log.warning(
                "claimed again a request whose earlier claim of ours lapsed; stopping the old job",
                extra={"request_id": job.request_id, "attempt": old.attempt},
            )
            self._stop(old, StopReason.LOST)
            self._release(old)
        self._schedule(job)
        self.jobs[job.request_id] = job

    def _schedule(self, job: Job) -> None:
        """Next renewal when a third of the claim has gone by — at once if a slow claim or
        renewal call already used that up (the claim's time counts from when it was sent)."""
        job.renew_at = min(time.monotonic() + self.interval, job.deadline - 2 * self.interval)

    def lapse(self, now: float | None = None) -> list[Job]:
        """Stop (and drop) every job whose claim deadline is about to pass unrenewed."""
        now = time.monotonic() if now is None else now
        lapsed = [job for job in self.jobs.values() if now >= job.deadline - self.lapse_margin]
        for job in lapsed:
            log.warning(
                "claim not renewed in time; stopping the job",
                extra={"request_id": job.request_id, "attempt": job.attempt},
            )
            del self.jobs[job.request_id]
            self._release(job)
            self._stop(job, StopReason.LOST)
        if lapsed:
            metrics.CLAIMS.labels("lapsed").inc(len(lapsed))
        return lapsed

    def remove(self, job: Job) -> None:
        if self.jobs.get(job.request_id) is job:
            del self.jobs[job.request_id]
        self._release(job)

    @staticmethod
    def _release(job: Job) -> None:
        """We no longer hold ``job``'s claim: its budget slot is free (once)."""
        if job.slot is not None:
            job.slot.release()

    def signal_cancel(self, signal: CancelSignal) -> bool:
        """A cancel seen on the stream for a job we hold: stop it now, not at the next renew."""
        job = self.jobs.get(signal.request_id)
        if job is None or signal.owner != self.worker_id or job.attempt != signal.attempt:
            return False
        if signal.token is not None and signal.token != job.token:
            return False
        self._stop(job, StopReason.CANCEL)
        return True

    def note_subscribed(self, request_id: str) -> None:
        """A job we hold got subscribers (seen on the stream): its frames go to them from now on."""
        job = self.jobs.get(request_id)
        if job is not None and not job.record.subscribed:
            job.record = dataclasses.replace(job.record, subscribed=True)

    def _stop(self, job: Job, reason: StopReason) -> None:
        job.request_stop(reason)
        if self.on_stop is not None:
            self.on_stop(job)

    async def renew(self, job: Job) -> None:
        try:
            # A renewal is worth waiting for until the claim runs out (at least a third of
            # the claim): a call stuck on a dead connection gives its slot up by then, and
            # the job lapses as it must. (Cutting calls shorter turned slow answers under
            # load into lapses.)
            left = min(self.claim_seconds, job.deadline - time.monotonic())
            async with asyncio.timeout(max(self.interval, left)):
                record = await self.requests.renew(
                    job.request_id,
                    owner=self.worker_id,
                    attempt=job.attempt,
                    token=job.token,
                    claim_seconds=self.claim_seconds,
                )
        except TimeoutError:
            log.warning("claim renew timed out", extra={"request_id": job.request_id})
            job.renew_at = min(job.renew_at, time.monotonic() + self.interval / 4)
            return
        except TransitionRefused:
            if self.jobs.get(job.request_id) is not job:
                return  # settled meanwhile (our own terminal write moved the status on)
            log.warning("claim lost to another processor", extra={"request_id": job.request_id})
            self._stop(job, StopReason.LOST)
            return
        except StoreError as exc:
            log.warning("claim renew failed", extra={"request_id": job.request_id, "error": str(exc)})
            # Try again soon rather than a whole interval later: the claim is running out.
            job.renew_at = min(job.renew_at, time.monotonic() + self.interval / 4)
            return
        if self.jobs.get(job.request_id) is job:
            job.refresh(record)
            self._schedule(job)
        if record.cancel_requested and job.stop_reason is not StopReason.CANCEL:
            self._stop(job, StopReason.CANCEL)

    async def renew_all(self) -> None:
        """Renew every held claim now (one call each, at most 32 at a time)."""
        jobs = list(self.jobs.values())
        sem = asyncio.Semaphore(RENEW_CONCURRENCY)

        async def one(job: Job) -> None:
            async with sem:
                await self.renew(job)

        await asyncio.gather(*(one(job) for job in jobs))

    def renew_due(self, now: float | None = None) -> int:
        """Start the renewal of every job whose turn came and that has none in flight.

        Each job is renewed on its own schedule, so one call stuck on a dead connection
        (up to the SDK's timeouts and retries) holds back only its own job — which then
        lapses and stops, as it must — never every other claim of this processor.
        """
        now = time.monotonic() if now is None else now
        due = [job for job in self.jobs.values() if not job.renewing and now >= job.renew_at]
        room = RENEW_CONCURRENCY - self.renewing
        if len(due) > room:
            # A bounded batch per tick, the claims closest to their deadline first: the
            # rest wait for a free slot here rather than in a queue of tasks, where a
            # renewal would start too late to matter.
            due = heapq.nsmallest(max(0, room), due, key=lambda job: job.deadline)
        started = 0
        for job in due:
            job.renewing = True
            self.renewing += 1
            job.renew_at = now + self.interval
            self._renewals.spawn(self._renew_one(job), name=f"renew-{job.request_id}")
            started += 1
        return started

    async def _renew_one(self, job: Job) -> None:
        try:
            async with self._renew_slots:
                await self.renew(job)
        except Exception:
            log.exception("claim renewal failed", extra={"request_id": job.request_id})
        finally:
            self.renewing -= 1
            job.renewing = False

    async def run(self) -> None:
        """Every tick: stop jobs whose claim is about to lapse, start the renewals that are due."""
        tick = max(0.02, min(0.25, self.claim_seconds / 16))
        try:
            while True:
                await asyncio.sleep(tick)
                self.lapse()
                self.renew_due()
        finally:
            self._renewals.cancel()

    def start(self) -> None:
        self._loop.start(self.run())

    async def stop(self) -> None:
        await self._loop.stop()
