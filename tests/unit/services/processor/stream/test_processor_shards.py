"""Shard lineage and lease planning on DescribeStream-shaped data (no I/O).

DynamoDB Local never closes a shard within a test run, so the KCL rules — parents
before children, expiry take-over, stealing, clean-up — are checked here on the
shapes DescribeStream and the leases table produce.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.processor.stream.shards import (
    LATEST,
    Shard,
    is_checkpoint_sequence,
    new_lease,
    plan_leases,
    shards_from_pages,
)
from streamer.store.leases import SHARD_END, TRIM_HORIZON, Lease, lease_key

ARN = "arn:aws:dynamodb:ddblocal:000000000000:table/t-requests/stream/2026-01-01T00:00:00.000"
NOW = 1_000_000.0


def shard_desc(shard_id: str, parent: str | None = None, *, closed: bool = False) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "ShardId": shard_id,
        "SequenceNumberRange": {"StartingSequenceNumber": "100"},
    }
    if parent:
        raw["ParentShardId"] = parent
    if closed:
        raw["SequenceNumberRange"]["EndingSequenceNumber"] = "200"
    return raw


def lease(
    shard_id: str,
    *,
    owner: str | None = None,
    expires_in: float = 10.0,
    checkpoint: str = TRIM_HORIZON,
    parents: tuple[str, ...] = (),
    counter: int = 1,
    arn: str = ARN,
) -> Lease:
    return Lease(
        lease_key=lease_key(arn, shard_id),
        stream_arn=arn,
        shard_id=shard_id,
        owner=owner,
        counter=counter,
        expires_at=NOW + expires_in if owner else 0.0,
        checkpoint=checkpoint,
        parents=parents,
    )


def plan(shards: list[Shard], leases: list[Lease], worker: str = "w1", **kw: Any) -> Any:
    return plan_leases(stream_arn=ARN, shards=shards, leases=leases, worker_id=worker, now=NOW, **kw)


def ids(leases: Any) -> list[str]:
    return [item.shard_id for item in leases]


# --- DescribeStream parsing ---------------------------------------------------------------


def test_shards_from_pages_reads_lineage_and_dedupes_overlapping_pages() -> None:
    pages: list[dict[str, Any]] = [
        {"Shards": [shard_desc("s-1", closed=True), shard_desc("s-2", "s-1")], "LastEvaluatedShardId": "s-2"},
        {"Shards": [shard_desc("s-2", "s-1"), shard_desc("s-3", "s-2")]},
    ]
    shards = shards_from_pages(pages)
    assert [s.shard_id for s in shards] == ["s-1", "s-2", "s-3"]
    assert shards[0].closed and not shards[1].closed
    assert shards[0].parent_id is None
    assert shards[2].parent_id == "s-2"
    assert shards[0].starting_sequence == "100" and shards[0].ending_sequence == "200"


def test_shards_from_pages_tolerates_an_empty_stream() -> None:
    assert shards_from_pages([{"Shards": []}, {}]) == []


# --- creating leases ------------------------------------------------------------------------


def test_new_shards_get_unowned_leases_with_their_parents() -> None:
    shards = shards_from_pages([{"Shards": [shard_desc("a", closed=True), shard_desc("b", "a")]}])
    result = plan(shards, [])
    assert ids(result.create) == ["a", "b"]
    created = {item.shard_id: item for item in result.create}
    assert created["a"].owner is None and created["a"].parents == ()
    assert created["b"].parents == ("a",)
    assert created["a"].lease_key == lease_key(ARN, "a")


def test_initial_position_latest_applies_to_root_shards_only() -> None:
    root = Shard(shard_id="a")
    child = Shard(shard_id="b", parent_id="a")
    assert new_lease(stream_arn=ARN, shard=root, initial_position=LATEST).checkpoint == LATEST
    assert new_lease(stream_arn=ARN, shard=child, initial_position=LATEST).checkpoint == TRIM_HORIZON
    assert new_lease(stream_arn=ARN, shard=root).checkpoint == TRIM_HORIZON


def test_existing_leases_are_not_created_again_and_other_streams_are_ignored() -> None:
    shards = [Shard(shard_id="a")]
    other = lease("a", arn=ARN + "-old", owner="w9")
    result = plan(shards, [lease("a"), other])
    assert result.create == ()
    assert ids(result.take) == ["a"]


# --- parents before children ------------------------------------------------------------------


def test_child_waits_until_its_parent_is_finished() -> None:
    shards = [Shard(shard_id="a", ending_sequence="9"), Shard(shard_id="b", parent_id="a")]
    result = plan(shards, [])
    assert ids(result.take) == ["a"], "only the parent may be read first"

    leases = [lease("a", owner="w2", checkpoint="150"), lease("b", parents=("a",))]
    assert ids(plan(shards, leases).take) == [], "parent still being read by w2"

    leases = [lease("a", checkpoint=SHARD_END), lease("b", parents=("a",))]
    assert ids(plan(shards, leases).take) == ["b"], "parent finished: the child is next"


def test_child_of_a_trimmed_parent_is_eligible() -> None:
    # The parent left the stream (24 h retention) and its lease was cleaned up.
    shards = [Shard(shard_id="b", parent_id="gone")]
    result = plan(shards, [])
    assert ids(result.take) == ["b"]


def test_unfinished_parent_that_left_the_stream_is_still_read_first() -> None:
    # Its reader will get ResourceNotFound and checkpoint SHARD_END; only then the child.
    shards = [Shard(shard_id="b", parent_id="a")]
    leases = [lease("a", checkpoint="150"), lease("b", parents=("a",))]
    assert ids(plan(shards, leases).take) == ["a"]


def test_child_with_two_parents_waits_for_both() -> None:
    shards = [Shard(shard_id="a"), Shard(shard_id="b"), Shard(shard_id="c")]
    leases = [
        lease("a", checkpoint=SHARD_END),
        lease("b", owner="w2", checkpoint="1"),
        lease("c", parents=("a", "b")),
    ]
    assert "c" not in ids(plan(shards, leases).take)
    leases[1] = lease("b", checkpoint=SHARD_END)
    assert ids(plan(shards, leases).take) == ["c"]


def test_finished_leases_of_shards_gone_from_the_stream_are_deleted() -> None:
    shards = [Shard(shard_id="b", parent_id="a")]
    leases = [lease("a", checkpoint=SHARD_END), lease("b", parents=("a",)), lease("z", checkpoint=SHARD_END)]
    result = plan(shards, leases)
    assert ids(result.delete) == ["a", "z"]
    # The child stays eligible once the parent's lease is gone (absent lease, absent shard).
    after = plan(shards, [lease("b", parents=("a",))])
    assert ids(after.take) == ["b"]


def test_finished_lease_of_a_shard_still_in_the_stream_is_kept() -> None:
    shards = [Shard(shard_id="a", ending_sequence="5"), Shard(shard_id="b", parent_id="a")]
    result = plan(shards, [lease("a", checkpoint=SHARD_END), lease("b", parents=("a",))])
    assert result.delete == ()


# --- taking expired leases and balancing ---------------------------------------------------------


def test_expired_and_free_leases_are_taken_up_to_target() -> None:
    shards = [Shard(shard_id=s) for s in "abcd"]
    leases = [
        lease("a", owner="w2", expires_in=-1),  # expired: w2 died
        lease("b"),  # free
        lease("c", owner="w3"),  # live
        lease("d", owner="w3"),  # live
    ]
    result = plan(shards, leases)
    # Workers: w1 (us) and w3 (live); w2 is dead. 4 leases / 2 workers = 2.
    assert result.workers == 2 and result.target == 2
    assert ids(result.take) == ["a", "b"]
    assert result.steal is None


def test_take_is_limited_to_the_missing_share() -> None:
    shards = [Shard(shard_id=s) for s in "abcdef"]
    leases = [lease(s) for s in "abcd"] + [lease("e", owner="w2"), lease("f", owner="w2")]
    result = plan(shards, leases)
    assert result.target == 3
    assert len(result.take) == 3


def test_a_new_worker_steals_one_lease_from_the_busiest() -> None:
    shards = [Shard(shard_id=s) for s in "abcd"]
    leases = [lease(s, owner="w2") for s in "abcd"]
    result = plan(shards, leases)
    assert result.target == 2
    assert result.take == ()
    assert result.steal is not None and result.steal.owner == "w2"


def test_no_steal_when_balanced_within_one() -> None:
    shards = [Shard(shard_id=s) for s in "abc"]
    leases = [lease("a", owner="w2"), lease("b", owner="w2"), lease("c", owner="w1")]
    result = plan(shards, leases, reading=["c"])
    assert result.held == 1 and result.target == 2
    assert result.steal is None, "2 vs 1 is as balanced as 3 leases on 2 workers get"


def test_steal_from_a_worker_at_target_when_we_are_two_short() -> None:
    shards = [Shard(shard_id=s) for s in "abcd"]
    leases = [lease("a", owner="w2"), lease("b", owner="w2"), lease("c", owner="w3"), lease("d", owner="w3")]
    result = plan(shards, leases)
    assert result.target == 2
    assert result.steal is not None


def test_a_lease_of_ours_without_a_reader_is_taken_again() -> None:
    shards = [Shard(shard_id="a")]
    leases = [lease("a", owner="w1")]
    assert ids(plan(shards, leases, reading=[]).take) == ["a"]
    assert ids(plan(shards, leases, reading=["a"]).take) == []


def test_single_open_shard_with_two_workers_is_not_ping_ponged() -> None:
    shards = [Shard(shard_id="a")]
    leases = [lease("a", owner="w2")]
    result = plan(shards, leases)
    assert result.take == () and result.steal is None


def test_is_checkpoint_sequence() -> None:
    assert is_checkpoint_sequence("000000000000000000012")
    assert not is_checkpoint_sequence(TRIM_HORIZON)
    assert not is_checkpoint_sequence(LATEST)
    assert not is_checkpoint_sequence(SHARD_END)


# --- convergence: several workers planning in rounds ------------------------------------------------


def simulate(shards: list[Shard], workers: list[str], rounds: int) -> dict[str, Lease]:
    """Apply each worker's plan in turn, as the coordinator would (takes bump the counter)."""
    table: dict[str, Lease] = {}
    reading: dict[str, set[str]] = {w: set() for w in workers}
    for _ in range(rounds):
        for worker in workers:
            # A worker notices a lost lease at its next renew.
            reading[worker] = {s for s in reading[worker] if table[s].owner == worker}
            result = plan_leases(
                stream_arn=ARN,
                shards=shards,
                leases=list(table.values()),
                worker_id=worker,
                now=NOW,
                reading=reading[worker],
            )
            for new in result.create:
                table.setdefault(new.shard_id, new)
            wanted = list(result.take) + ([result.steal] if result.steal else [])
            for want in wanted:
                current = table[want.shard_id]
                if current.counter != want.counter:
                    continue  # conditional take refused
                table[want.shard_id] = dataclasses.replace(
                    current, owner=worker, counter=current.counter + 1, expires_at=NOW + 10
                )
                reading[worker].add(want.shard_id)
    return table


@settings(max_examples=60, deadline=None)
@given(n_shards=st.integers(min_value=1, max_value=12), n_workers=st.integers(min_value=1, max_value=5))
def test_workers_converge_to_a_balanced_assignment(n_shards: int, n_workers: int) -> None:
    shards = [Shard(shard_id=f"s{i:02d}") for i in range(n_shards)]
    workers = [f"w{i}" for i in range(n_workers)]
    table = simulate(shards, workers, rounds=3 * n_shards + 5)
    owners = [item.owner for item in table.values()]
    assert all(owner in workers for owner in owners), "every shard is read"
    counts = [owners.count(w) for w in workers]
    assert max(counts) - min(counts) <= 1, counts
    # Once balanced, a further round changes nothing (no ping-pong).
    again = simulate_from(table, shards, workers)
    assert {k: v.owner for k, v in again.items()} == {k: v.owner for k, v in table.items()}


def simulate_from(table: dict[str, Lease], shards: list[Shard], workers: list[str]) -> dict[str, Lease]:
    table = dict(table)
    for worker in workers:
        mine = {s for s, item in table.items() if item.owner == worker}
        result = plan_leases(
            stream_arn=ARN,
            shards=shards,
            leases=list(table.values()),
            worker_id=worker,
            now=NOW,
            reading=mine,
        )
        for want in list(result.take) + ([result.steal] if result.steal else []):
            table[want.shard_id] = dataclasses.replace(want, owner=worker, counter=want.counter + 1)
    return table


def test_lineage_is_followed_in_order_across_rounds() -> None:
    # a (closed) -> b (closed) -> c (open); a chain after two roll-overs.
    shards = [
        Shard(shard_id="a", ending_sequence="1"),
        Shard(shard_id="b", parent_id="a", ending_sequence="2"),
        Shard(shard_id="c", parent_id="b"),
    ]
    order: list[str] = []
    table: dict[str, Lease] = {}
    reading: set[str] = set()
    for _ in range(5):
        result = plan_leases(
            stream_arn=ARN,
            shards=shards,
            leases=list(table.values()),
            worker_id="w1",
            now=NOW,
            reading=reading,
        )
        for new in result.create:
            table.setdefault(new.shard_id, new)
        for want in result.take:
            order.append(want.shard_id)
            # Read to the end at once: the reader checkpoints SHARD_END for closed shards.
            done = next(s for s in shards if s.shard_id == want.shard_id).closed
            table[want.shard_id] = dataclasses.replace(
                want,
                owner=None if done else "w1",
                expires_at=0.0 if done else NOW + 10,
                checkpoint=SHARD_END if done else "5",
                counter=want.counter + 1,
            )
            if not done:
                reading.add(want.shard_id)
    assert order == ["a", "b", "c"], "each shard once, parents first"
