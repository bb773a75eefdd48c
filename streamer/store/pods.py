"""The connect pods that hold sockets: one directory item in the leases table.

A publish to a tenant or a user goes to every connect pod (``Connections.SendToAudience``),
each of which knows its own sockets by tenant and user — so nobody reads the tenant's
connection records per publish. The pods are listed here: one item (key
``compose("connect-pods")``) whose ``pods`` map holds ``endpoint → expires_at``. A connect
pod adds itself *before* its WebSocket port accepts anything and refreshes its entry
every ``lease / 3``; it removes itself when it stops. A reader takes the entries that have
not expired, with one strongly consistent ``GetItem`` — so every socket open when the
read happens is on a listed pod (its pod was listed before the socket was accepted).

A pod that died keeps its entry until it expires; calling it then fails fast and counts
nothing (its sockets died with it). Entries expired for longer than :data:`FORGET_AFTER`
are removed by the next pod that refreshes, so the item stays small.
"""

from __future__ import annotations

from typing import Any, Final

from streamer.store.base import TableStore, expression, now
from streamer.store.dynamo import BOTO_ERRORS, deserialize_item, error_code, serialize, wrap_error
from streamer.store.keys import compose

#: The directory item's key in the leases table (never a lease or a processor's heartbeat).
PODS_KEY: Final = compose("connect-pods")
#: The map attribute holding the pods; the leases scan skips the item by it.
PODS_ATTRIBUTE: Final = "pods"
#: Seconds after its expiry that a dead pod's entry is removed.
FORGET_AFTER: Final = 300.0


class ConnectPodStore(TableStore):
    """The connect pods directory (in the leases table, key ``lease_key``)."""

    async def beat(self, endpoint: str, *, duration: float) -> None:
        """Say that the pod at ``endpoint`` is alive for ``duration`` more seconds."""
        expires = now() + duration
        try:
            out = await self._update(endpoint, expires)
        except BOTO_ERRORS as exc:
            if error_code(exc) != "ValidationException":
                raise wrap_error(exc, f"update_item {self.table}") from exc
            # The item (or its map) does not exist yet: create it, then set our entry.
            await self._create_directory()
            try:
                out = await self._update(endpoint, expires)
            except BOTO_ERRORS as again:
                raise wrap_error(again, f"update_item {self.table}") from again
        pods = deserialize_item(out.get("Attributes", {})).get(PODS_ATTRIBUTE) or {}
        dead = [ep for ep, until in pods.items() if float(until) < now() - FORGET_AFTER]
        if dead:
            await self._call(
                "update_item",
                Key={"lease_key": serialize(PODS_KEY)},
                UpdateExpression="REMOVE " + ", ".join(f"#p.#d{i}" for i in range(len(dead))),
                ExpressionAttributeNames={
                    "#p": PODS_ATTRIBUTE,
                    **{f"#d{i}": ep for i, ep in enumerate(dead)},
                },
            )

    async def live(self) -> list[str]:
        """Endpoints of the pods whose entry has not expired (strongly consistent, sorted)."""
        out = await self._call(
            "get_item",
            Key={"lease_key": serialize(PODS_KEY)},
            ConsistentRead=True,
            ProjectionExpression="#p",
            ExpressionAttributeNames={"#p": PODS_ATTRIBUTE},
        )
        pods: dict[str, Any] = deserialize_item(out.get("Item", {})).get(PODS_ATTRIBUTE) or {}
        at = now()
        return sorted(ep for ep, until in pods.items() if float(until) > at)

    async def leave(self, endpoint: str) -> None:
        """Remove the pod's entry (a clean stop)."""
        try:
            await self.client.update_item(
                TableName=self.table,
                Key={"lease_key": serialize(PODS_KEY)},
                UpdateExpression="REMOVE #p.#e",
                ExpressionAttributeNames={"#p": PODS_ATTRIBUTE, "#e": endpoint},
            )
        except BOTO_ERRORS as exc:
            if error_code(exc) != "ValidationException":  # no directory: nothing to remove
                raise wrap_error(exc, f"update_item {self.table}") from exc

    async def _update(self, endpoint: str, expires: float) -> dict[str, Any]:
        return await self.client.update_item(  # type: ignore[no-any-return]
            TableName=self.table,
            Key={"lease_key": serialize(PODS_KEY)},
            UpdateExpression="SET #p.#e = :x",
            ExpressionAttributeNames={"#p": PODS_ATTRIBUTE, "#e": endpoint},
            ExpressionAttributeValues=expression({"x": expires}),
            ReturnValues="ALL_NEW",
        )

    async def _create_directory(self) -> None:
        try:
            await self.client.put_item(
                TableName=self.table,
                Item={"lease_key": serialize(PODS_KEY), PODS_ATTRIBUTE: {"M": {}}},
                ConditionExpression="attribute_not_exists(lease_key)",
            )
        except BOTO_ERRORS as exc:
            if error_code(exc) != "ConditionalCheckFailedException":  # another pod made it first
                raise wrap_error(exc, f"put_item {self.table}") from exc
