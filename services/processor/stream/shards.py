"""Shard lineage and lease planning: the KCL's rules as pure functions.

There is no Python KCL, so the processor decides for itself which shards of the
requests table's stream it reads. Everything here is pure — DescribeStream pages
and lease items in, a :class:`LeasePlan` out — because DynamoDB Local rolls its
shards over only on a 4-hour timer, so closed shards, parents and children can
never be produced in a test run; the rules are tested on DescribeStream-shaped
data instead (tests/unit/services/processor/stream/test_processor_shards.py), and the I/O around them
(:mod:`services.processor.stream.coordinator`) stays thin.

The rules:

* **One lease per shard.** A shard with no lease gets one (created unowned, with
  its parent recorded). Root shards start at ``initial_position`` (TRIM_HORIZON
  by default); children always start at TRIM_HORIZON so nothing between the
  parent's end and the child's first read is skipped.
* **Parents first.** A lease is eligible only when each parent's lease is
  finished (checkpoint ``SHARD_END``) or the parent is gone entirely (no lease
  and no longer in the stream: trimmed past the 24 h retention). Records of one
  request therefore reach us in write order even across a shard split.
* **Expired leases are taken over.** A lease whose owner stopped renewing it
  (``expires_at`` in the past, or no owner) is taken with a conditional write on
  the counter we saw, so of two workers racing for it exactly one wins.
* **Balance by stealing.** Each worker aims for ``target = ceil(eligible /
  workers)`` leases, where workers are the owners of unexpired leases plus
  itself. It first takes expired leases; if none are free and it is still under
  target, it steals *one* lease per round from the busiest worker when that
  worker is over target (or at target while we are two or more short) — one
  at a time, so two workers never ping-pong leases back and forth.
* **Clean-up.** A finished lease whose shard has left the stream is deleted;
  its children then see the parent as gone, which counts as done.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from streamer.store.leases import SHARD_END, TRIM_HORIZON, Lease, lease_key

LATEST = "LATEST"
INITIAL_POSITIONS = (TRIM_HORIZON, LATEST)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Shard:
    """One shard as DescribeStream reports it."""

    shard_id: str
    parent_id: str | None = None
    starting_sequence: str = ""
    ending_sequence: str | None = None

    @property
    def closed(self) -> bool:
        """A closed shard gets no new records; reading it ends with no next iterator."""
        return self.ending_sequence is not None

    @classmethod
    def from_description(cls, raw: Mapping[str, Any]) -> Shard:
        seq = raw.get("SequenceNumberRange") or {}
        return cls(
            shard_id=str(raw["ShardId"]),
            parent_id=raw.get("ParentShardId") or None,
            starting_sequence=str(seq.get("StartingSequenceNumber", "")),
            ending_sequence=seq.get("EndingSequenceNumber"),
        )


def shards_from_pages(pages: Iterable[Mapping[str, Any]]) -> list[Shard]:
    """Every shard from DescribeStream pages (each a ``StreamDescription``), de-duplicated.

    Pages may overlap when a page is re-read after a shard was added; the first
    sighting of a shard id wins.
    """
    seen: dict[str, Shard] = {}
    for page in pages:
        for raw in page.get("Shards", ()) or ():
            shard = Shard.from_description(raw)
            seen.setdefault(shard.shard_id, shard)
    return list(seen.values())


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeasePlan:
    """What one worker should do this round.

    ``create``: new unowned leases to write (conditional create; losing the race is
    fine). ``take``: leases to take as seen (free, expired, or ours without a
    reader). ``steal``: at most one lease to take from the busiest worker.
    ``delete``: finished leases of shards no longer in the stream. ``target``: how
    many leases this worker should hold.
    """

    create: tuple[Lease, ...] = ()
    take: tuple[Lease, ...] = ()
    steal: Lease | None = None
    delete: tuple[Lease, ...] = ()
    target: int = 0
    held: int = 0
    workers: int = 1


def parents_done(lease: Lease, *, leases: Mapping[str, Lease], shard_ids: set[str]) -> bool:
    """Whether every parent of ``lease`` is finished or gone (so it may be read)."""
    for parent in lease.parents:
        parent_lease = leases.get(parent)
        if parent_lease is not None:
            if not parent_lease.finished:
                return False
        elif parent in shard_ids:
            return False  # the parent's lease is about to be created: read it first
    return True


def new_lease(*, stream_arn: str, shard: Shard, initial_position: str = TRIM_HORIZON) -> Lease:
    """The unowned lease for a shard seen for the first time."""
    if initial_position not in INITIAL_POSITIONS:
        raise ValueError(f"initial_position must be one of {INITIAL_POSITIONS}")
    start = initial_position if shard.parent_id is None else TRIM_HORIZON
    return Lease(
        lease_key=lease_key(stream_arn, shard.shard_id),
        stream_arn=stream_arn,
        shard_id=shard.shard_id,
        checkpoint=start,
        parents=(shard.parent_id,) if shard.parent_id else (),
    )


def plan_leases(
    *,
    stream_arn: str,
    shards: Iterable[Shard],
    leases: Iterable[Lease],
    worker_id: str,
    now: float,
    reading: Iterable[str] = (),
    initial_position: str = TRIM_HORIZON,
) -> LeasePlan:
    """Decide which leases ``worker_id`` creates, takes, steals and deletes.

    ``reading`` holds the shard ids this worker has a live reader for; a lease the
    table says is ours but that we do not read (a restart with the same id) is
    taken again rather than counted as held.
    """
    shard_list = list(shards)
    shard_ids = {s.shard_id for s in shard_list}
    by_shard: dict[str, Lease] = {lease.shard_id: lease for lease in leases if lease.stream_arn == stream_arn}
    reading_set = set(reading)

    create = tuple(
        new_lease(stream_arn=stream_arn, shard=s, initial_position=initial_position)
        for s in sorted(shard_list, key=lambda s: s.shard_id)
        if s.shard_id not in by_shard
    )
    everything = dict(by_shard)
    everything.update({lease.shard_id: lease for lease in create})

    delete = tuple(
        lease
        for lease in sorted(by_shard.values(), key=lambda x: x.shard_id)
        if lease.finished and lease.shard_id not in shard_ids
    )
    eligible = [
        lease
        for lease in sorted(everything.values(), key=lambda x: x.shard_id)
        if not lease.finished and parents_done(lease, leases=everything, shard_ids=shard_ids)
    ]

    def live(lease: Lease) -> bool:
        if lease.expired(now):
            return False
        return lease.owner != worker_id or lease.shard_id in reading_set

    counts: dict[str, int] = {worker_id: 0}
    for lease in eligible:
        if live(lease) and lease.owner is not None:
            counts[lease.owner] = counts.get(lease.owner, 0) + 1
    workers = len(counts)
    target = math.ceil(len(eligible) / workers) if eligible else 0
    held = counts[worker_id]
    need = target - held

    takeable = [lease for lease in eligible if not live(lease)]
    take = tuple(takeable[: max(need, 0)])

    steal: Lease | None = None
    if need > 0 and not takeable:
        others = [(count, owner) for owner, count in counts.items() if owner != worker_id]
        if others:
            busiest_count, busiest = max(others, key=lambda pair: (pair[0], pair[1]))
            if busiest_count > target or (busiest_count == target and need >= 2):
                theirs = [lease for lease in eligible if lease.owner == busiest and live(lease)]
                steal = theirs[-1] if theirs else None

    return LeasePlan(
        create=create,
        take=take,
        steal=steal,
        delete=delete,
        target=target,
        held=held,
        workers=workers,
    )


def is_checkpoint_sequence(checkpoint: str) -> bool:
    """Whether a checkpoint names a record (reopen AFTER it) rather than a position."""
    return checkpoint not in (TRIM_HORIZON, LATEST, SHARD_END, "")
