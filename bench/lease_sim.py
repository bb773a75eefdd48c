"""Simulate the stream lease coordinator at a scale no test stack can reach.

DynamoDB Local has one open shard and rolls it over only every 4 hours, so the lease rules
(:func:`services.processor.stream.shards.plan_leases`) are tested on DescribeStream-shaped data.
This module runs the *same* planning function, unchanged, inside a discrete-event model of a
large deployment: hundreds of shards closing and splitting over time (DescribeStream-shaped
:class:`~services.processor.stream.shards.Shard` objects with parents and ending sequence numbers),
and tens of processors joining, dying without a goodbye, and restarting under new ids.

What is modelled, and how it maps to the real coordinator (``coordinator.py``):

* **The lease table** is a dict with the same conditional semantics as the DynamoDB writes:
  create only if absent, take/steal/renew/checkpoint only if the counter is the one the
  worker saw (the fencing token), every successful write bumps the counter.
* **A worker's round** runs every ``lease_seconds / 3`` at its own phase: renew every held
  lease (a refused renew = the lease was stolen: its reader stops), finish readers whose
  shard is closed and fully read (checkpoint ``SHARD_END``), re-describe the stream when
  due (every ``describe_interval`` and after a shard ended), then call ``plan_leases`` on a
  consistent scan and carry out create / delete / take / steal.
* **A dead worker** simply stops: its leases expire after ``lease_seconds``.
* **Retention**: a closed shard leaves DescribeStream ``retention`` seconds after it closed
  (24 h on AWS, compressed here), which exercises the delete path and "parent gone".

What it reports (``python -m bench.lease_sim``):

* **balance** — among live workers, max - min leases held, sampled every ``sample_seconds``;
  the share of samples within 1, and the time from each membership change until the spread
  is back within 1;
* **take-over** — for every death, the time until each eligible shard it held is read by a
  live worker again (p50, p99, max), and the longest time any eligible shard went unread;
* **parent before child** — a child whose reading started before its parent's lease reached
  ``SHARD_END`` (must be 0);
* **double reads** — shard-seconds read by two live workers at once (a steal: the loser
  notices at its next renew; harmless because claims are conditional, but it is wasted reads).

Bounded in time and size; pure Python, no I/O, seeded: the same arguments give the same
figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import math
import random
import statistics
import sys
import time
from collections.abc import Iterable
from typing import Any

from services.processor.stream.shards import Shard, plan_leases
from streamer.store.leases import SHARD_END, Lease

STREAM_ARN = "arn:aws:dynamodb:sim:000000000000:table/streamer-requests/stream/sim"


@dataclasses.dataclass(kw_only=True)
class SimConfig:
    """The knobs of one simulation run (defaults: the figures in docs/scale.md)."""

    shards: int = 200
    workers: int = 20
    minutes: float = 120.0
    lease_seconds: float = 10.0
    describe_interval: float = 60.0
    shard_lifetime_minutes: float = 30.0
    split_share: float = 0.3
    retention_minutes: float = 20.0
    drain_seconds: float = 2.0
    sample_seconds: float = 5.0
    churn_start_minutes: float | None = None
    churn_every_minutes: float = 3.0
    restart_after_seconds: float = 30.0
    seed: int = 1


@dataclasses.dataclass
class SimStream:
    """A DynamoDB stream's shards over time: roll-overs (one child) and splits (two)."""

    shards: dict[str, Shard] = dataclasses.field(default_factory=dict)
    closed_at: dict[str, float] = dataclasses.field(default_factory=dict)
    opened_at: dict[str, float] = dataclasses.field(default_factory=dict)
    next_id: int = 0
    next_seq: int = 1000

    def add(self, *, now: float, parent: str | None = None) -> str:
        shard_id = f"shardId-{self.next_id:08d}"
        self.next_id += 1
        self.shards[shard_id] = Shard(
            shard_id=shard_id, parent_id=parent, starting_sequence=str(self.next_seq)
        )
        self.next_seq += 1000
        self.opened_at[shard_id] = now
        return shard_id

    def close(self, shard_id: str, *, now: float, children: int) -> list[str]:
        old = self.shards[shard_id]
        self.shards[shard_id] = dataclasses.replace(old, ending_sequence=str(self.next_seq))
        self.next_seq += 1
        self.closed_at[shard_id] = now
        return [self.add(now=now, parent=shard_id) for _ in range(children)]

    def open_ids(self) -> list[str]:
        return [sid for sid, shard in self.shards.items() if not shard.closed]

    def describe(self, *, now: float, retention: float) -> list[Shard]:
        """What DescribeStream returns now: every shard not yet trimmed past retention."""
        return [
            shard
            for sid, shard in self.shards.items()
            if sid not in self.closed_at or now - self.closed_at[sid] < retention
        ]


class LeaseTable:
    """The leases table with DynamoDB's conditional-write semantics, in memory."""

    def __init__(self) -> None:
        self.items: dict[str, Lease] = {}

    def scan(self) -> list[Lease]:
        return list(self.items.values())

    def create(self, lease: Lease) -> bool:
        if lease.lease_key in self.items:
            return False
        self.items[lease.lease_key] = lease
        return True

    def take(self, seen: Lease, *, owner: str, now: float, duration: float) -> Lease | None:
        current = self.items.get(seen.lease_key)
        if current is None or current.counter != seen.counter:
            return None
        won = dataclasses.replace(
            current, owner=owner, counter=current.counter + 1, expires_at=now + duration
        )
        self.items[seen.lease_key] = won
        return won

    def renew(self, held: Lease, *, now: float, duration: float) -> Lease | None:
        current = self.items.get(held.lease_key)
        if current is None or current.counter != held.counter or current.owner != held.owner:
            return None
        renewed = dataclasses.replace(current, counter=current.counter + 1, expires_at=now + duration)
        self.items[held.lease_key] = renewed
        return renewed

    def finish(self, held: Lease) -> Lease | None:
        current = self.items.get(held.lease_key)
        if current is None or current.counter != held.counter:
            return None
        done = dataclasses.replace(current, checkpoint=SHARD_END, counter=current.counter + 1)
        self.items[held.lease_key] = done
        return done

    def delete(self, lease: Lease) -> bool:
        current = self.items.get(lease.lease_key)
        if current is None or current.counter != lease.counter:
            return False
        del self.items[lease.lease_key]
        return True


@dataclasses.dataclass
class Worker:
    worker_id: str
    phase: float
    alive: bool = True
    held: dict[str, Lease] = dataclasses.field(default_factory=dict)
    reading_since: dict[str, float] = dataclasses.field(default_factory=dict)
    shards: list[Shard] = dataclasses.field(default_factory=list)
    described_at: float | None = None
    force_describe: bool = False


@dataclasses.dataclass
class SimResult:
    """Every figure the run measured (seconds unless named otherwise)."""

    config: SimConfig
    shards_total: int
    shards_finished: int
    splits: int
    rollovers: int
    joins: int
    deaths: int
    rounds: int
    plan_calls_per_second: float
    balance_samples: int
    balanced_share: float
    within_two_share: float
    spread_p50: float
    spread_max: int
    rebalance_seconds: list[float]
    takeover_seconds: list[float]
    longest_unread_seconds: float
    parent_before_child: int
    double_read_shard_seconds: float
    final_spread: int
    final_unread: int

    def rows(self) -> list[tuple[str, str]]:
        def pct(values: list[float], q: float) -> str:
            if not values:
                return "-"
            ordered = sorted(values)
            return f"{ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]:.1f}"

        cfg = self.config
        rebalance = self.rebalance_seconds
        takeover = self.takeover_seconds

        def three(values: list[float]) -> str:
            return f"{pct(values, 0.5)} / {pct(values, 0.99)} / {pct(values, 1.0)} s"

        return [
            ("simulated time", f"{cfg.minutes:.0f} min, lease {cfg.lease_seconds:.0f} s"),
            (
                "shards",
                f"{cfg.shards} open at start → {self.shards_total} seen ({self.rollovers} roll-overs, "
                f"{self.splits} splits), {self.shards_finished} read to SHARD_END",
            ),
            ("processors", f"up to {cfg.workers} live; {self.joins} joins, {self.deaths} deaths"),
            (
                "lease balance: samples with max - min ≤ 1 / ≤ 2",
                f"{self.balanced_share * 100:.1f} % / {self.within_two_share * 100:.1f} % of "
                f"{self.balance_samples} (median spread {self.spread_p50:.0f}, worst {self.spread_max})",
            ),
            (
                "time back to balance after a join/death (p50 / p99 / max)",
                f"{three(rebalance)} over {len(rebalance)} changes",
            ),
            (
                "take-over of a dead processor's shards (p50 / p99 / max)",
                f"{three(takeover)} over {len(takeover)} shards",
            ),
            ("longest time an eligible shard went unread", f"{self.longest_unread_seconds:.1f} s"),
            ("children read before their parent finished", str(self.parent_before_child)),
            ("double reads (two live readers on one shard)", f"{self.double_read_shard_seconds:.0f} shard-s"),
            ("at the end: spread / eligible shards unread", f"{self.final_spread} / {self.final_unread}"),
            ("plan_leases calls per wall second (this machine)", f"{self.plan_calls_per_second:,.0f}"),
        ]


class Simulation:
    """One seeded run: an event heap of worker rounds, stream changes, joins and deaths."""

    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.stream = SimStream()
        self.table = LeaseTable()
        self.workers: dict[str, Worker] = {}
        self.events: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self.now = 0.0
        self.finished_at: dict[str, float] = {}
        self.read_started: dict[str, float] = {}
        self.parent_before_child = 0
        self.splits = 0
        self.rollovers = 0
        self.joins = 0
        self.deaths = 0
        self.rounds = 0
        self.plan_seconds = 0.0
        self.deaths_pending: list[tuple[float, set[str]]] = []
        self.takeover: list[float] = []
        self.unread_since: dict[str, float] = {}
        self.longest_unread = 0.0
        self.double_read = 0.0
        self.spreads: list[int] = []
        self.change_at: float | None = None
        self.rebalance: list[float] = []
        self._worker_n = 0

    # -- scheduling ----------------------------------------------------------------------
    def at(self, when: float, kind: str, arg: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self.events, (when, self._seq, kind, arg))

    def run(self) -> SimResult:
        cfg = self.cfg
        end = cfg.minutes * 60
        for _ in range(cfg.shards):
            self.stream.add(now=0.0)
        # Start with a quarter of the processors, the rest join one by one (a scale-up).
        first = max(1, cfg.workers // 4)
        for _ in range(first):
            self.join()
        ramp = (cfg.minutes * 60 * 0.35) / max(1, cfg.workers - first)
        for i in range(cfg.workers - first):
            self.at(ramp * (i + 1), "join")
        churn_start = cfg.churn_start_minutes if cfg.churn_start_minutes is not None else cfg.minutes * 0.5
        t = churn_start * 60
        while t < end * 0.9:
            self.at(t, "kill")
            t += cfg.churn_every_minutes * 60
        mean_life = cfg.shard_lifetime_minutes * 60
        for sid in self.stream.open_ids():
            self.at(self.rng.expovariate(1 / mean_life), "close", sid)
        t = cfg.sample_seconds
        while t <= end:
            self.at(t, "sample")
            t += cfg.sample_seconds
        while self.events:
            when, _, kind, arg = heapq.heappop(self.events)
            if when > end:
                break
            self.now = when
            getattr(self, f"_on_{kind}")(arg)
        return self.result()

    # -- events ----------------------------------------------------------------------------
    def join(self) -> None:
        self._worker_n += 1
        worker = Worker(
            worker_id=f"proc-{self._worker_n:03d}", phase=self.rng.uniform(0, self.cfg.lease_seconds / 3)
        )
        self.workers[worker.worker_id] = worker
        self.joins += 1
        self.change_at = self.now
        self.at(self.now + worker.phase, "round", worker.worker_id)

    def _on_join(self, _: Any) -> None:
        self.join()

    def _on_kill(self, _: Any) -> None:
        live = [w for w in self.workers.values() if w.alive]
        if len(live) <= 1:
            return
        victim = self.rng.choice(live)
        victim.alive = False
        self.deaths += 1
        self.change_at = self.now
        eligible = self._eligible_ids()
        # Only leases the table still gives to the victim: one stolen from it just before it
        # died is already read by the thief.
        owned = {sid for sid, lease in victim.held.items() if self.table.items.get(lease.lease_key) == lease}
        self.deaths_pending.append((self.now, owned & eligible))
        for sid in list(victim.held):
            self._stop_reading(victim, sid)
        self.at(self.now + self.cfg.restart_after_seconds, "join")

    def _on_close(self, shard_id: str) -> None:
        children = 2 if self.rng.random() < self.cfg.split_share else 1
        if children == 2:
            self.splits += 1
        else:
            self.rollovers += 1
        for child in self.stream.close(shard_id, now=self.now, children=children):
            self.at(
                self.now + self.rng.expovariate(1 / (self.cfg.shard_lifetime_minutes * 60)), "close", child
            )

    def _on_round(self, worker_id: str) -> None:
        worker = self.workers[worker_id]
        if not worker.alive:
            return
        self.rounds += 1
        self.round(worker)
        self.at(self.now + self.cfg.lease_seconds / 3, "round", worker_id)

    # -- one coordinator round, as coordinator.LeaseCoordinator.tick does it ---------------
    def round(self, worker: Worker) -> None:
        cfg = self.cfg
        for sid, lease in list(worker.held.items()):
            renewed = self.table.renew(lease, now=self.now, duration=cfg.lease_seconds)
            if renewed is None:
                self._stop_reading(worker, sid)
            else:
                worker.held[sid] = renewed
        for sid, lease in list(worker.held.items()):
            shard = self.stream.shards[sid]
            if (
                shard.closed
                and self.now - max(worker.reading_since[sid], self.stream.closed_at[sid]) >= cfg.drain_seconds
            ):
                done = self.table.finish(lease)
                self._stop_reading(worker, sid)
                if done is not None:
                    self.finished_at.setdefault(sid, self.now)
                    worker.force_describe = True
        if (
            worker.force_describe
            or worker.described_at is None
            or self.now - worker.described_at >= cfg.describe_interval
        ):
            worker.shards = self.stream.describe(now=self.now, retention=cfg.retention_minutes * 60)
            worker.described_at = self.now
            worker.force_describe = False
        started = time.perf_counter()
        plan = plan_leases(
            stream_arn=STREAM_ARN,
            shards=worker.shards,
            leases=self.table.scan(),
            worker_id=worker.worker_id,
            now=self.now,
            reading=worker.held.keys(),
        )
        self.plan_seconds += time.perf_counter() - started
        for lease in plan.create:
            self.table.create(lease)
        for lease in plan.delete:
            self.table.delete(lease)
        for lease in (*plan.take, *((plan.steal,) if plan.steal else ())):
            won = self.table.take(lease, owner=worker.worker_id, now=self.now, duration=cfg.lease_seconds)
            if won is not None:
                self._start_reading(worker, won)

    def _start_reading(self, worker: Worker, lease: Lease) -> None:
        sid = lease.shard_id
        worker.held[sid] = lease
        worker.reading_since[sid] = self.now
        self.read_started.setdefault(sid, self.now)
        for parent in lease.parents:
            parent_lease_known = parent in self.finished_at or any(
                item.shard_id == parent for item in self.table.items.values()
            )
            if parent_lease_known and self.finished_at.get(parent, math.inf) > self.now:
                self.parent_before_child += 1
        for when, shard_ids in self.deaths_pending:
            if sid in shard_ids:
                self.takeover.append(self.now - when)
                shard_ids.discard(sid)

    def _stop_reading(self, worker: Worker, shard_id: str) -> None:
        worker.held.pop(shard_id, None)
        worker.reading_since.pop(shard_id, None)

    # -- measurements ----------------------------------------------------------------------
    def _eligible_ids(self) -> set[str]:
        """Shards that should be read now: not finished, every parent finished or gone."""
        described = {
            s.shard_id for s in self.stream.describe(now=self.now, retention=self.cfg.retention_minutes * 60)
        }
        out = set()
        for sid in described:
            if sid in self.finished_at:
                continue
            parent = self.stream.shards[sid].parent_id
            if parent is None or parent in self.finished_at or parent not in described:
                out.add(sid)
        return out

    def _on_sample(self, _: Any) -> None:
        live = [w for w in self.workers.values() if w.alive]
        counts = [len(w.held) for w in live]
        spread = max(counts) - min(counts) if counts else 0
        self.spreads.append(spread)
        if self.change_at is not None and spread <= 1:
            self.rebalance.append(self.now - self.change_at)
            self.change_at = None
        readers: dict[str, int] = {}
        for worker in live:
            for sid in worker.held:
                readers[sid] = readers.get(sid, 0) + 1
        self.double_read += sum(n - 1 for n in readers.values() if n > 1) * self.cfg.sample_seconds
        eligible = self._eligible_ids()
        for sid in eligible:
            if sid in readers:
                self.unread_since.pop(sid, None)
            else:
                since = self.unread_since.setdefault(sid, self.now)
                self.longest_unread = max(self.longest_unread, self.now - since)
        for sid in list(self.unread_since):
            if sid not in eligible:
                del self.unread_since[sid]

    def result(self) -> SimResult:
        live = [w for w in self.workers.values() if w.alive]
        counts = [len(w.held) for w in live]
        eligible = self._eligible_ids()
        read = {sid for w in live for sid in w.held}
        return SimResult(
            config=self.cfg,
            shards_total=len(self.stream.shards),
            shards_finished=len(self.finished_at),
            splits=self.splits,
            rollovers=self.rollovers,
            joins=self.joins,
            deaths=self.deaths,
            rounds=self.rounds,
            plan_calls_per_second=self.rounds / self.plan_seconds if self.plan_seconds else 0.0,
            balance_samples=len(self.spreads),
            balanced_share=sum(1 for s in self.spreads if s <= 1) / len(self.spreads)
            if self.spreads
            else 1.0,
            within_two_share=sum(1 for s in self.spreads if s <= 2) / len(self.spreads)
            if self.spreads
            else 1.0,
            spread_p50=statistics.median(self.spreads) if self.spreads else 0.0,
            spread_max=max(self.spreads, default=0),
            rebalance_seconds=self.rebalance,
            takeover_seconds=self.takeover,
            longest_unread_seconds=self.longest_unread,
            parent_before_child=self.parent_before_child,
            double_read_shard_seconds=self.double_read,
            final_spread=(max(counts) - min(counts)) if counts else 0,
            final_unread=len(eligible - read),
        )


def simulate(config: SimConfig) -> SimResult:
    """Run one simulation to the end and return its figures."""
    return Simulation(config).run()


def markdown(result: SimResult) -> str:
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in result.rows()]
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lease_sim", description=__doc__.splitlines()[0])
    defaults = SimConfig()
    for field in dataclasses.fields(SimConfig):
        default = getattr(defaults, field.name)
        kind = float if isinstance(default, float) or default is None else int
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default)
    args = parser.parse_args(list(argv) if argv is not None else None)
    config = SimConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimConfig)})
    started = time.perf_counter()
    result = simulate(config)
    print(markdown(result))
    print(f"\n(simulated in {time.perf_counter() - started:.1f} s wall; seed {config.seed})", file=sys.stderr)
    return 0 if result.parent_before_child == 0 and result.final_unread == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
