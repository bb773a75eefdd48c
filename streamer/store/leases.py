"""Stream shard leases (the KCL's lease table, done with conditional writes).

One item per shard: ``owner``, a ``counter`` bumped on every renewal or take-over
(the fencing token), ``expires_at``, the ``checkpoint`` (last sequence number fully
handed off, or ``SHARD_END``), and the shard's ``parents``. Whoever holds the item
with the counter it last wrote owns the shard; a stale owner's renew or checkpoint
fails its condition and it must stop reading that shard.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from streamer.store.base import TableStore, expression, now, record_from_item
from streamer.store.dynamo import (
    BOTO_ERRORS,
    deserialize_item,
    error_code,
    serialize,
    serialize_item,
    wrap_error,
)
from streamer.store.errors import AlreadyExists, ConditionFailed
from streamer.store.keys import compose, lease_key
from streamer.store.pods import PODS_ATTRIBUTE

__all__ = ["SHARD_END", "TRIM_HORIZON", "Lease", "LeaseStore", "lease_key"]

SHARD_END = "SHARD_END"
TRIM_HORIZON = "TRIM_HORIZON"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lease:
    lease_key: str
    stream_arn: str
    shard_id: str
    owner: str | None = None
    counter: int = 0
    expires_at: float = 0.0
    checkpoint: str = TRIM_HORIZON
    parents: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    def expired(self, at: float | None = None) -> bool:
        return self.owner is None or self.expires_at <= (now() if at is None else at)

    def to_item(self) -> dict[str, Any]:
        item = dataclasses.asdict(self)
        item["parents"] = list(self.parents)
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Lease:
        values = record_from_item(cls, item)
        values["parents"] = tuple(values.get("parents") or ())
        return cls(**values)


#: Membership items live in the leases table too, marked by this attribute.
MEMBER_ATTRIBUTE = "member"


def member_key(worker_id: str) -> str:
    """A processor's heartbeat item (never a lease: a lease key's first part is a stream ARN)."""
    return compose("member", worker_id)


class LeaseStore(TableStore):
    """The leases table (key ``lease_key``)."""

    async def create(self, lease: Lease) -> Lease:
        if not await self._create(lease.to_item(), key="lease_key"):
            raise AlreadyExists(lease.lease_key)
        return lease

    async def get(self, key: str) -> Lease | None:
        out = await self._call("get_item", Key={"lease_key": serialize(key)}, ConsistentRead=True)
        item = out.get("Item")
        return Lease.from_item(deserialize_item(item)) if item else None

    async def all(self, *, stream_arn: str | None = None) -> list[Lease]:
        """Every lease (of one stream when given), all pages, consistently read."""
        kwargs: dict[str, Any] = {
            "ConsistentRead": True,
            # Processors' heartbeats and the connect pods directory share the table.
            "FilterExpression": "attribute_not_exists(#member) AND attribute_not_exists(#pods)",
            "ExpressionAttributeNames": {"#member": MEMBER_ATTRIBUTE, "#pods": PODS_ATTRIBUTE},
        }
        if stream_arn:
            kwargs["FilterExpression"] += " AND stream_arn = :a"
            kwargs["ExpressionAttributeValues"] = expression({"a": stream_arn})
        return [Lease.from_item(item) async for item in self._scan_pages(**kwargs)]

    # -- processor membership: who shares the handlers' cluster-wide limits ----------------
    async def beat(self, worker_id: str, *, duration: float) -> None:
        """Say that ``worker_id`` is alive for ``duration`` more seconds (one unconditional put)."""
        item = {
            "lease_key": member_key(worker_id),
            MEMBER_ATTRIBUTE: worker_id,
            "expires_at": now() + duration,
        }
        await self._call("put_item", Item=serialize_item(item))

    async def members(self) -> list[str]:
        """Worker ids whose heartbeat has not expired, consistently read, sorted."""
        items = self._scan_pages(
            ConsistentRead=True,
            FilterExpression="attribute_exists(#member) AND expires_at > :now",
            ExpressionAttributeNames={"#member": MEMBER_ATTRIBUTE},
            ExpressionAttributeValues=expression({"now": now()}),
        )
        return sorted([str(item[MEMBER_ATTRIBUTE]) async for item in items])

    async def leave(self, worker_id: str) -> None:
        """Remove ``worker_id``'s heartbeat (a clean stop: the others' shares grow at once)."""
        await self.delete(member_key(worker_id))

    async def _conditional(self, key: str, *, condition: str, update: str, values: dict[str, Any]) -> Lease:
        try:
            out = await self.client.update_item(
                TableName=self.table,
                Key={"lease_key": serialize(key)},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#owner": "owner", "#counter": "counter"},
                ExpressionAttributeValues=expression(values),
                ReturnValues="ALL_NEW",
            )
        except BOTO_ERRORS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise ConditionFailed(key, condition, await self.get(key)) from exc
            raise wrap_error(exc, f"UpdateItem {self.table}") from exc
        return Lease.from_item(deserialize_item(out["Attributes"]))

    async def take(self, lease: Lease, *, owner: str, duration: float) -> Lease:
        """Take a lease as we last saw it (free, expired, or stolen): counter must be unchanged."""
        return await self._conditional(
            lease.lease_key,
            condition="#counter = :c",
            update="SET #owner = :o, expires_at = :e, #counter = :n",
            values={"c": lease.counter, "o": owner, "e": now() + duration, "n": lease.counter + 1},
        )

    async def renew(self, lease: Lease, *, duration: float, checkpoint: str | None = None) -> Lease:
        """Renew our lease (and record ``checkpoint`` in the same write); fails if someone took it."""
        return await self._next_term(lease, expires_at=now() + duration, checkpoint=checkpoint)

    async def checkpoint(self, lease: Lease, *, sequence: str) -> Lease:
        """Record progress on our shard (``SHARD_END`` when it is fully read)."""
        return await self._conditional(
            lease.lease_key,
            condition="#owner = :o AND #counter = :c",
            update="SET checkpoint = :s",
            values={"o": lease.owner, "c": lease.counter, "s": sequence},
        )

    async def release(self, lease: Lease, *, checkpoint: str | None = None) -> Lease:
        """Give a lease up (clean shutdown) so another worker takes it at once; ``checkpoint`` too."""
        return await self._next_term(lease, expires_at=0, checkpoint=checkpoint, give_up=True)

    async def _next_term(
        self, lease: Lease, *, expires_at: float, checkpoint: str | None, give_up: bool = False
    ) -> Lease:
        """Our lease with a new expiry and the counter bumped (``give_up``: without an owner);
        fails if someone took it."""
        values = {"o": lease.owner, "c": lease.counter, "e": expires_at, "n": lease.counter + 1}
        update = "SET expires_at = :e, #counter = :n"
        if checkpoint is not None:
            update += ", checkpoint = :s"
            values["s"] = checkpoint
        return await self._conditional(
            lease.lease_key,
            condition="#owner = :o AND #counter = :c",
            update=update + (" REMOVE #owner" if give_up else ""),
            values=values,
        )

    async def delete(self, key: str) -> None:
        await self._call("delete_item", Key={"lease_key": serialize(key)})
