"""The shard reader's iterator handling, on scripted DynamoDB Streams answers.

Expired iterators (15 min), shard ends (4 h roll-over) and paginated DescribeStream
cannot be produced by DynamoDB Local in a test run, so the reader and the describe
pagination run here against a scripted stand-in for the AWS API (never for our own
code: the lease store stand-in only records checkpoints).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from botocore.exceptions import ClientError

from services.processor.stream.coordinator import HeldLease, LeaseCoordinator, PollPolicy, ShardReader
from streamer.config import load_settings
from streamer.store.leases import SHARD_END, TRIM_HORIZON, Lease

ARN = "arn:stream"


def client_error(code: str, op: str = "GetRecords") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, op)


def rec(seq: int) -> dict[str, Any]:
    return {"eventName": "INSERT", "dynamodb": {"SequenceNumber": f"{seq:021d}"}}


class Streams:
    """Answers GetShardIterator/GetRecords from a script; records every call."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _next(self, op: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append((op, kwargs))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    async def get_shard_iterator(self, **kwargs: Any) -> Any:
        return self._next("iterator", kwargs)

    async def get_records(self, **kwargs: Any) -> Any:
        return self._next("records", kwargs)


class Leases:
    """Records checkpoints."""

    def __init__(self) -> None:
        self.checkpoints: list[str] = []

    async def checkpoint(self, lease: Lease, *, sequence: str) -> Lease:
        self.checkpoints.append(sequence)
        return dataclasses.replace(lease, checkpoint=sequence)


async def run_reader(
    script: list[Any], *, checkpoint: str = TRIM_HORIZON, leases: Leases | None = None, lose: bool = False
) -> Any:
    """``lose``: the lease is lost (a renew was refused) while the first batch is handled."""
    streams = Streams(script)
    leases = leases or Leases()
    seen: list[list[str]] = []
    lease = Lease(
        lease_key="k", stream_arn=ARN, shard_id="shard-1", owner="w1", counter=3, checkpoint=checkpoint
    )
    held = HeldLease(lease)

    async def on_records(shard_id: str, records: list[dict[str, Any]]) -> None:
        seen.append([r["dynamodb"]["SequenceNumber"] for r in records])
        if lose:
            held.lost = True

    reader = ShardReader(
        client=streams,
        stream_arn=ARN,
        held=held,
        leases=leases,  # type: ignore[arg-type]
        on_records=on_records,
        poll=PollPolicy(idle_seconds=0.001),
        on_lag=lambda shard, lag: None,
    )
    await reader.run()
    return reader, streams, leases, seen


def iterator_args(streams: Streams) -> list[tuple[str, str | None]]:
    return [
        (kw["ShardIteratorType"], kw.get("SequenceNumber")) for op, kw in streams.calls if op == "iterator"
    ]


async def test_reads_checkpoints_reopens_an_expired_iterator_and_ends_the_shard() -> None:
    reader, streams, leases, seen = await run_reader(
        [
            {"ShardIterator": "it-1"},
            {"Records": [rec(1), rec(2)], "NextShardIterator": "it-2"},
            {"Records": [], "NextShardIterator": "it-3"},
            client_error("ExpiredIteratorException"),
            {"ShardIterator": "it-4"},
            {"Records": [rec(3)]},  # no NextShardIterator: the closed shard is fully read
        ]
    )
    assert seen == [[f"{1:021d}", f"{2:021d}"], [f"{3:021d}"]]
    assert iterator_args(streams) == [("TRIM_HORIZON", None), ("AFTER_SEQUENCE_NUMBER", f"{2:021d}")]
    # Batches are not checkpointed one by one (the lease's renew carries the position);
    # the end of the shard is.
    assert leases.checkpoints == [SHARD_END]
    assert reader.finished and reader.held.pending is None


async def test_the_position_is_noted_for_the_next_renew_and_written_with_it() -> None:
    class RenewingLeases(Leases):
        def __init__(self) -> None:
            super().__init__()
            self.renewed: list[str | None] = []

        async def renew(self, lease: Lease, *, duration: float, checkpoint: str | None = None) -> Lease:
            self.renewed.append(checkpoint)
            return dataclasses.replace(lease, checkpoint=checkpoint or lease.checkpoint)

    leases = RenewingLeases()
    reader, _, _, _ = await run_reader(
        [{"ShardIterator": "it-1"}, {"Records": [rec(1), rec(2)], "NextShardIterator": "it-2"}], leases=leases
    )
    assert leases.checkpoints == [] and reader.held.pending == f"{2:021d}"
    assert await reader.held.renew(leases, duration=10)  # type: ignore[arg-type]
    assert await reader.held.renew(leases, duration=10)  # type: ignore[arg-type]
    assert leases.renewed == [f"{2:021d}", None]  # written once, with the renew
    assert reader.held.lease.checkpoint == f"{2:021d}" and reader.held.pending is None


async def test_starts_after_the_checkpoint() -> None:
    _, streams, _, _ = await run_reader([{"ShardIterator": "it"}, {"Records": []}], checkpoint=f"{7:021d}")
    assert iterator_args(streams) == [("AFTER_SEQUENCE_NUMBER", f"{7:021d}")]


async def test_a_trimmed_checkpoint_reopens_at_trim_horizon() -> None:
    trimmed = client_error("TrimmedDataAccessException", "GetShardIterator")
    _, streams, leases, _ = await run_reader(
        [trimmed, {"ShardIterator": "it"}, {"Records": []}],
        checkpoint=f"{7:021d}",
    )
    assert iterator_args(streams) == [("AFTER_SEQUENCE_NUMBER", f"{7:021d}"), ("TRIM_HORIZON", None)]
    assert leases.checkpoints == [SHARD_END]


async def test_trimmed_records_reopen_at_trim_horizon() -> None:
    _, streams, _, seen = await run_reader(
        [
            {"ShardIterator": "it-1"},
            client_error("TrimmedDataAccessException"),
            {"ShardIterator": "it-2"},
            {"Records": [rec(9)]},
        ]
    )
    assert iterator_args(streams) == [("TRIM_HORIZON", None), ("TRIM_HORIZON", None)]
    assert seen == [[f"{9:021d}"]]


async def test_a_vanished_shard_counts_as_finished() -> None:
    reader, _, leases, _ = await run_reader([client_error("ResourceNotFoundException", "GetShardIterator")])
    assert reader.finished and leases.checkpoints == [SHARD_END]


async def test_throttling_backs_off_and_retries() -> None:
    _, streams, _, seen = await run_reader(
        [
            {"ShardIterator": "it-1"},
            client_error("LimitExceededException"),
            {"Records": [rec(1)]},
        ]
    )
    records_calls = [kw["ShardIterator"] for op, kw in streams.calls if op == "records"]
    assert records_calls == ["it-1", "it-1"], "the same iterator is retried after the backoff"
    assert seen == [[f"{1:021d}"]]


async def test_a_lost_lease_stops_the_reader_without_finishing() -> None:
    reader, streams, _, seen = await run_reader(
        [{"ShardIterator": "it-1"}, {"Records": [rec(1)], "NextShardIterator": "it-2"}], lose=True
    )
    assert seen == [[f"{1:021d}"]]
    assert not reader.finished and reader.held.lost
    assert streams.script == [], "no read after the lease was lost"


async def test_describe_follows_last_evaluated_shard_id() -> None:
    class Describe:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        async def describe_stream(self, **kwargs: Any) -> Any:
            self.calls.append(kwargs)
            if "ExclusiveStartShardId" not in kwargs:
                shards = [{"ShardId": "a", "SequenceNumberRange": {"EndingSequenceNumber": "5"}}]
                return {"StreamDescription": {"Shards": shards, "LastEvaluatedShardId": "a"}}
            return {"StreamDescription": {"Shards": [{"ShardId": "b", "ParentShardId": "a"}]}}

    client = Describe()
    coordinator = LeaseCoordinator(
        client=client,
        leases=None,  # type: ignore[arg-type]
        stream_arn=ARN,
        worker_id="w1",
        settings=load_settings({}),
        on_records=lambda shard, records: None,  # type: ignore[arg-type,return-value]
    )
    shards = await coordinator.describe()
    assert [(s.shard_id, s.parent_id, s.closed) for s in shards] == [("a", None, True), ("b", "a", False)]
    assert client.calls == [{"StreamArn": ARN}, {"StreamArn": ARN, "ExclusiveStartShardId": "a"}]


def test_poll_policy_defaults() -> None:
    local = PollPolicy.for_settings(load_settings({}, dynamodb_endpoint="http://127.0.0.1:8000"))
    assert (local.idle_seconds, local.min_interval_seconds) == (0.05, 0.0)
    aws = PollPolicy.for_settings(load_settings({}))
    assert (aws.idle_seconds, aws.min_interval_seconds) == (0.25, 0.2)
    slow = PollPolicy.for_settings(load_settings({}, poll_interval_seconds=1.0))
    assert slow.idle_seconds == 1.0
