"""The I/O around :mod:`.shards` (in this package): the lease coordinator and one reader per held shard.

The coordinator wakes every ``lease_seconds / 3``: it renews the leases it holds
(a failed renew means another worker took the lease: that shard's reader stops),
re-describes the stream when due (at start, after a reader reached a shard's end,
and every ``describe_interval``; DescribeStream is paginated with
``ExclusiveStartShardId``), scans the lease table, and carries out
:func:`~.shards.plan_leases` — create, take, steal, delete — starting a reader
for each lease it won.

A :class:`ShardReader` reads its shard from the checkpoint (``AFTER_SEQUENCE_NUMBER``)
or from ``TRIM_HORIZON``/``LATEST`` for a fresh lease, hands each batch to the
claim path, then checkpoints the batch's last sequence number. It never waits for
handlers — only for the claims (one conditional write each), so a checkpoint means
"every record up to here is claimed or refused", and a crash re-reads at most one
batch (at-least-once reading; the claim condition makes the second read harmless).

Errors: ``ExpiredIteratorException`` (iterators live 15 min) → reopen from the
checkpoint; ``TrimmedDataAccessException`` (the checkpoint fell past the 24 h
retention) → reopen at ``TRIM_HORIZON`` and rely on the sweeper for anything
trimmed; ``ResourceNotFoundException`` (the shard itself is gone) and a missing
``NextShardIterator`` (closed shard fully read) → checkpoint ``SHARD_END`` so the
children may start; throttling and 5xx → exponential backoff up to 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.processor import metrics
from services.processor.stream.shards import (
    LATEST,
    Shard,
    is_checkpoint_sequence,
    plan_leases,
    shards_from_pages,
)
from streamer.config import Settings
from streamer.retry import Backoff
from streamer.store.dynamo import error_code
from streamer.store.errors import AlreadyExists, ConditionFailed, StoreError
from streamer.store.leases import SHARD_END, TRIM_HORIZON, Lease, LeaseStore
from streamer.tasks import Background

log = logging.getLogger(__name__)

RecordsHandler = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
GET_RECORDS_LIMIT = 1000
_ERROR_BACKOFF_MAX = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class PollPolicy:
    """How often a reader calls GetRecords.

    ``idle_seconds`` is the wait after an *empty* GetRecords; a non-empty batch is
    followed at once by the next read (there may be more), but never sooner than
    ``min_interval_seconds`` after the previous call.

    Defaults, and why:

    * **DynamoDB Local** (an explicit non-AWS endpoint): ``idle = poll_interval_seconds``
      (50 ms by default) and no minimum spacing. A record is readable one GetRecords
      (2-10 ms) after its write, so pickup latency is about the idle wait; 50 ms
      keeps a request's start well under a tenth of a second while costing ~20 cheap
      loopback calls per second per shard — Local has no read limit.
    * **AWS**: ``idle = max(poll_interval_seconds, 0.25)`` and at least 0.2 s between
      calls. DynamoDB Streams allows about 5 GetRecords per second per shard; 4/s
      stays under it with room for a second reader during a lease hand-over, at the
      price of up to 250 ms extra pickup latency on an idle stream (a busy stream is
      read back-to-back, paced at 0.2 s, and each call returns up to 1,000 records).
    """

    idle_seconds: float = 0.05
    min_interval_seconds: float = 0.0

    @classmethod
    def for_settings(cls, settings: Settings) -> PollPolicy:
        endpoint = settings.dynamodb_endpoint
        if endpoint and "amazonaws.com" not in endpoint:
            return cls(idle_seconds=settings.poll_interval_seconds, min_interval_seconds=0.0)
        return cls(idle_seconds=max(settings.poll_interval_seconds, 0.25), min_interval_seconds=0.2)


#: Pause after the n-th failed stream read in a row: 0.2 s, 0.4 s, … up to the max, jittered.
_ERROR_BACKOFF = Backoff(base=0.2, cap=_ERROR_BACKOFF_MAX, jitter=0.5)


class HeldLease:
    """A lease this worker holds; renew and checkpoint are serialised by a lock.

    Both writes are conditional on the counter; without the lock a checkpoint
    racing a renew (which bumps the counter) would fail and look like a lost lease.

    The reader's progress is not written per batch: :meth:`note` remembers the
    latest sequence handled, and the next renew (every ``lease_seconds / 3``) or
    the release carries it in the same write — no write of its own. A crash
    re-reads what was handled since (conditional claims make that harmless).
    """

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lock = asyncio.Lock()
        self.lost = False
        #: The latest sequence number handled and not yet written.
        self.pending: str | None = None

    def note(self, sequence: str) -> None:
        """The reader handled everything up to ``sequence`` (written with the next renew)."""
        self.pending = sequence

    def _written(self, sequence: str | None) -> None:
        if sequence is not None and self.pending == sequence:
            self.pending = None

    @property
    def shard_id(self) -> str:
        return self.lease.shard_id

    async def renew(self, store: LeaseStore, *, duration: float) -> bool:
        async with self.lock:
            if self.lost:
                return False
            sequence = self.pending
            try:
                self.lease = await store.renew(self.lease, duration=duration, checkpoint=sequence)
            except ConditionFailed:
                self.lost = True
                return False
            self._written(sequence)
            return True

    async def checkpoint(self, store: LeaseStore, *, sequence: str) -> bool:
        async with self.lock:
            if self.lost:
                return False
            try:
                self.lease = await store.checkpoint(self.lease, sequence=sequence)
            except ConditionFailed:
                self.lost = True
                return False
            self.pending = None  # a direct checkpoint (SHARD_END) supersedes anything noted
            return True

    async def release(self, store: LeaseStore) -> None:
        async with self.lock:
            if self.lost:
                return
            self.lost = True
            with contextlib.suppress(ConditionFailed):
                await store.release(self.lease, checkpoint=self.pending)
            metrics.LEASE_CHANGES.labels("released").inc()


class ShardReader:
    """Reads one shard for as long as its lease is held."""

    def __init__(
        self,
        *,
        client: Any,
        stream_arn: str,
        held: HeldLease,
        leases: LeaseStore,
        on_records: RecordsHandler,
        poll: PollPolicy,
        on_lag: Callable[[str, float], None],
    ) -> None:
        self.client = client
        self.stream_arn = stream_arn
        self.held = held
        self.leases = leases
        self.on_records = on_records
        self.poll = poll
        self.on_lag = on_lag
        self.position = held.lease.checkpoint
        self.finished = False
        self._stopping = asyncio.Event()
        self._last_call = 0.0
        self._failures = 0

    @property
    def shard_id(self) -> str:
        return self.held.shard_id

    def stop(self) -> None:
        """Finish the batch at hand (claims and checkpoint), then return."""
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _open(self, position: str) -> str | None:
        """A shard iterator at ``position``; None when the shard is done (or gone)."""
        while not self._stopping.is_set():
            args: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": self.shard_id}
            if position == SHARD_END:
                return None
            if is_checkpoint_sequence(position):
                args.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=position)
            else:
                args["ShardIteratorType"] = LATEST if position == LATEST else TRIM_HORIZON
            try:
                out = await self.client.get_shard_iterator(**args)
            except ClientError as exc:
                code = error_code(exc)
                if code == "TrimmedDataAccessException":
                    log.warning(
                        "checkpoint trimmed; reopening at TRIM_HORIZON", extra={"shard": self.shard_id}
                    )
                    position = TRIM_HORIZON
                    continue
                if code == "ResourceNotFoundException":
                    return None
                await self._backoff(exc)
                continue
            except BotoCoreError as exc:
                await self._backoff(exc)
                continue
            self._failures = 0
            iterator = out.get("ShardIterator")
            return str(iterator) if iterator else None
        return None

    async def _backoff(self, exc: BaseException) -> None:
        self._failures += 1
        log.warning(
            "stream read failed; backing off",
            extra={"shard": self.shard_id, "error": error_code(exc) or type(exc).__name__},
        )
        await self._pause(_ERROR_BACKOFF.delay(self._failures))

    async def run(self) -> None:
        """Read until stopped, the lease is lost, or the shard ends."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("shard reader crashed", extra={"shard": self.shard_id})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        iterator = await self._open(self.position)
        if iterator is None:
            if not self._stopping.is_set():
                await self._finish()
            return
        while not self._stopping.is_set() and not self.held.lost:
            wait = self._last_call + self.poll.min_interval_seconds - loop.time()
            await self._pause(wait)
            self._last_call = loop.time()
            try:
                out = await self.client.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            except ClientError as exc:
                code = error_code(exc)
                if code == "ExpiredIteratorException" or (
                    code == "ValidationException" and "iterator" in str(exc).lower()
                ):
                    reopened = await self._open(self.position)
                elif code == "TrimmedDataAccessException":
                    # With a checkpoint, records between it and the oldest one left were
                    # trimmed unread: the sweeper finds any such request still PENDING.
                    # Without one (nothing read yet) nothing was skipped — DynamoDB Local
                    # says this whenever another table's stream took the sequence number
                    # an empty shard's TRIM_HORIZON iterator pointed at (numbers are global
                    # there).
                    log.log(
                        logging.WARNING if is_checkpoint_sequence(self.position) else logging.DEBUG,
                        "records trimmed; reopening at TRIM_HORIZON",
                        extra={"shard": self.shard_id, "position": self.position},
                    )
                    reopened = await self._open(TRIM_HORIZON)
                elif code == "ResourceNotFoundException":
                    reopened = None
                else:
                    await self._backoff(exc)
                    continue
                if reopened is None:
                    if not self._stopping.is_set():
                        await self._finish()
                    return
                iterator = reopened
                continue
            except BotoCoreError as exc:
                await self._backoff(exc)
                continue
            self._failures = 0
            records = out.get("Records") or []
            if records:
                await self._handle(records)
                if self.held.lost:
                    return
            else:
                self.on_lag(self.shard_id, 0.0)
            next_iterator = out.get("NextShardIterator")
            if not next_iterator:
                await self._finish()
                return
            iterator = str(next_iterator)
            if not records:
                await self._pause(self.poll.idle_seconds)

    async def _handle(self, records: list[dict[str, Any]]) -> None:
        metrics.RECORDS_READ.inc(len(records))
        newest = records[-1].get("dynamodb", {}).get("ApproximateCreationDateTime")
        if isinstance(newest, datetime.datetime):
            age = datetime.datetime.now(tz=datetime.UTC).timestamp() - newest.timestamp()
            self.on_lag(self.shard_id, max(0.0, age))
        elif isinstance(newest, int | float):
            self.on_lag(self.shard_id, max(0.0, datetime.datetime.now(tz=datetime.UTC).timestamp() - newest))
        try:
            await self.on_records(self.shard_id, records)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Claims never raise by design; if something did, the sweeper still
            # finds every PENDING request, so moving on loses nothing.
            log.exception("handling stream records failed", extra={"shard": self.shard_id})
        # Written with the lease's next renew or its release (see HeldLease), not now:
        # the next GetRecords does not wait for a checkpoint write.
        sequence = str(records[-1]["dynamodb"]["SequenceNumber"])
        self.position = sequence
        self.held.note(sequence)

    async def _finish(self) -> None:
        """The shard is fully read (closed, or gone): checkpoint SHARD_END."""
        self.finished = True
        try:
            await self.held.checkpoint(self.leases, sequence=SHARD_END)
            log.info("shard finished", extra={"shard": self.shard_id})
        except StoreError as exc:
            log.warning("SHARD_END checkpoint failed", extra={"shard": self.shard_id, "error": str(exc)})


class LeaseCoordinator:
    """Holds this worker's share of the stream's shard leases and runs their readers."""

    def __init__(
        self,
        *,
        client: Any,
        leases: LeaseStore,
        stream_arn: str,
        worker_id: str,
        settings: Settings,
        on_records: RecordsHandler,
        poll: PollPolicy | None = None,
        initial_position: str = TRIM_HORIZON,
        describe_interval: float = 60.0,
    ) -> None:
        self.client = client
        self.leases = leases
        self.stream_arn = stream_arn
        self.worker_id = worker_id
        self.settings = settings
        self.on_records = on_records
        self.poll = poll or PollPolicy.for_settings(settings)
        self.initial_position = initial_position
        self.describe_interval = describe_interval
        self.held: dict[str, HeldLease] = {}
        self.readers: dict[str, tuple[ShardReader, asyncio.Task[None]]] = {}
        self.shards: list[Shard] = []
        #: Every lease of the stream as the last round read them (whoever holds them).
        self.seen: list[Lease] = []
        self._lags: dict[str, float] = {}
        self._described_at: float | None = None
        self._loop = Background(f"leases-{worker_id}")
        self._stopping = asyncio.Event()

    @property
    def interval(self) -> float:
        """Renew three times per lease period, as the KCL does: two missed renewals are survivable."""
        return self.settings.lease_seconds / 3

    async def start(self) -> None:
        await self.tick()
        self._loop.start(self._run())

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)
            if self._stopping.is_set():
                return
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease round failed")

    async def describe(self) -> list[Shard]:
        """Every shard of the stream, following ``LastEvaluatedShardId`` across pages."""
        pages: list[dict[str, Any]] = []
        args: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            out = await self.client.describe_stream(**args)
            page = out["StreamDescription"]
            pages.append(page)
            last = page.get("LastEvaluatedShardId")
            if not last:
                break
            args["ExclusiveStartShardId"] = last
        return shards_from_pages(pages)

    async def tick(self) -> None:
        """One round: renew, reap finished readers, (re)describe when due, plan and act."""
        loop = asyncio.get_running_loop()
        await self._renew_all()
        shard_ended = await self._reap()
        if (
            shard_ended
            or self._described_at is None
            or loop.time() - self._described_at >= self.describe_interval
        ):
            try:
                self.shards = await self.describe()
                self._described_at = loop.time()
            except (ClientError, BotoCoreError) as exc:
                log.warning("DescribeStream failed", extra={"error": error_code(exc) or type(exc).__name__})
                if self._described_at is None:
                    return
        leases = await self.leases.all(stream_arn=self.stream_arn)
        self.seen = list(leases)
        plan = plan_leases(
            stream_arn=self.stream_arn,
            shards=self.shards,
            leases=leases,
            worker_id=self.worker_id,
            now=_now(),
            reading=self.readers.keys(),
            initial_position=self.initial_position,
        )
        for lease in plan.create:
            with contextlib.suppress(AlreadyExists):
                await self.leases.create(lease)
        for lease in plan.delete:
            await self.leases.delete(lease.lease_key)
        wanted = list(plan.take) + ([plan.steal] if plan.steal else [])
        for lease in wanted:
            if self._stopping.is_set():
                return
            if lease.shard_id in self.readers:
                continue
            try:
                taken = await self.leases.take(
                    lease, owner=self.worker_id, duration=self.settings.lease_seconds
                )
            except ConditionFailed:
                continue
            if lease is plan.steal:
                log.info("stole lease", extra={"shard": lease.shard_id, "from_worker": lease.owner})
            metrics.LEASE_CHANGES.labels("stolen" if lease is plan.steal else "taken").inc()
            self._start_reader(taken)

    def _start_reader(self, lease: Lease) -> None:
        held = HeldLease(lease)
        reader = ShardReader(
            client=self.client,
            stream_arn=self.stream_arn,
            held=held,
            leases=self.leases,
            on_records=self.on_records,
            poll=self.poll,
            on_lag=self._on_lag,
        )
        task = asyncio.create_task(reader.run(), name=f"shard-{lease.shard_id}")
        self.held[lease.shard_id] = held
        self.readers[lease.shard_id] = (reader, task)
        metrics.LEASES_HELD.inc()
        log.info("reading shard", extra={"shard": lease.shard_id, "checkpoint": lease.checkpoint})

    def _forget(self, shard_id: str) -> None:
        self.held.pop(shard_id, None)
        if self.readers.pop(shard_id, None) is not None:
            metrics.LEASES_HELD.dec()
        self._lags.pop(shard_id, None)
        self._publish_lag()

    async def _reap(self) -> bool:
        """Drop readers that ended; True when one of them reached its shard's end."""
        ended = False
        for shard_id, (reader, task) in list(self.readers.items()):
            if task.done() or reader.held.lost:
                if not task.done():
                    reader.stop()
                    continue
                ended = ended or reader.finished
                if reader.finished:
                    # A finished lease needs no renewing; give the item up so the
                    # table shows no owner for it.
                    with contextlib.suppress(StoreError):
                        await reader.held.release(self.leases)
                self._forget(shard_id)
        return ended

    async def _renew_all(self) -> None:
        async def renew(held: HeldLease) -> None:
            try:
                ok = await held.renew(self.leases, duration=self.settings.lease_seconds)
            except StoreError as exc:
                log.warning("lease renew failed", extra={"shard": held.shard_id, "error": str(exc)})
                return
            if not ok:
                log.info("lease taken by another worker", extra={"shard": held.shard_id})
                metrics.LEASE_CHANGES.labels("lost").inc()
                entry = self.readers.get(held.shard_id)
                if entry:
                    entry[0].stop()

        live = [h for sid, h in self.held.items() if not self.readers[sid][0].finished]
        await asyncio.gather(*(renew(h) for h in live))

    def _on_lag(self, shard_id: str, seconds: float) -> None:
        self._lags[shard_id] = seconds
        self._publish_lag()

    def _publish_lag(self) -> None:
        metrics.STREAM_LAG.set(max(self._lags.values(), default=0.0))

    async def stop(self, *, release: bool = True, timeout: float = 5.0) -> None:
        """Stop reading (each reader finishes its batch) and release our leases at once.

        Releasing (rather than letting them expire) lets another worker pick the
        shards up on its next round instead of after ``lease_seconds``.
        """
        self._stopping.set()
        await self._loop.stop()
        for reader, _ in self.readers.values():
            reader.stop()
        tasks = [task for _, task in self.readers.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if release:
            for held in list(self.held.values()):
                try:
                    await held.release(self.leases)
                except StoreError as exc:
                    log.warning("lease release failed", extra={"shard": held.shard_id, "error": str(exc)})
        for shard_id in list(self.readers):
            self._forget(shard_id)

    async def abort(self) -> None:
        """Stop everything at once with no writes (tests: a crashed process)."""
        self._stopping.set()
        await self._loop.stop()
        tasks = [task for _, task in self.readers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for shard_id in list(self.readers):
            self._forget(shard_id)


def _now() -> float:
    return time.time()
