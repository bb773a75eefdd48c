"""Requests and their state machine; every change is one conditional update.

States: ``PENDING → PROCESSING → COMPLETED | FAILED | CANCELLED``; ``PROCESSING →
PENDING`` for a retry (attempt + 1, not before a backoff time) or when a claim
expired (its processor died); ``PENDING → CANCELLED`` on ``$cancel``. Terminal
states never change.

**Fencing.** Every claim writes a fresh random ``claim_token``; a transition out of
PROCESSING is conditioned on (status, owner, attempt, *token*), so two processors can
never both win, and a job whose claim lapsed cannot write anything any more — not
even when the same processor claimed the request again at the same attempt (its
sweeper offers to its own claimer), because that new claim has a new token. A refused
update raises :class:`TransitionRefused`.

**Ambiguous writes.** A write can land while its answer is lost; the SDK then retries
it and the retry meets its own write's condition. Every conditional update asks for
the current item on refusal (``ReturnValuesOnConditionCheckFailure=ALL_OLD``, no extra
read) and every transition stamps ``updated_at`` with the writer's own time: when the
refused retry finds that exact stamp, the first try landed and the update returns the
item as a success (a ``COMPLETED`` whose answer was lost is still delivered).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from streamer import tracing
from streamer.store.base import TableStore, expression, now, record_from_item
from streamer.store.dynamo import (
    BOTO_ERRORS,
    deserialize_item,
    error_code,
    serialize,
    wrap_error,
)
from streamer.store.errors import AlreadyExists, NotFound, TransitionRefused
from streamer.store.keys import client_request_id, request_key, user_key

REQUEST_TTL_SECONDS = 7 * 24 * 3600

PENDING = "PENDING"
PROCESSING = "PROCESSING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
_JSON_FIELDS = ("payload", "metadata", "result")
#: Set by every write with its own clock: not part of what a write *means*.
_WRITE_STAMPS = frozenset({"updated_at", "finished_at"})


#: What ``$resume`` reads of each request (:meth:`RequestStore.resume_page`): what a
#: ``status`` frame shows, without the payload, metadata or result.
BRIEF_FIELDS = (
    "request_id",
    "action",
    "status",
    "user_id",
    "tenant_id",
    "connection_id",
    "created_at",
    "updated_at",
    "ttl",
    "attempt",
    "finished_at",
    "progress",
    "error",
    "cancel_requested",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One async request as stored. ``payload``/``metadata``/``result`` are JSON values.

    ``request_id`` is the table key, :func:`~streamer.store.keys.request_key` of
    (tenant, the client's id): ids are scoped per tenant. Every store call, the
    subscriptions and the processor use it; every frame a client or handler sees
    carries :attr:`client_request_id`, the id the client gave.
    """

    request_id: str
    action: str
    status: str
    user_id: str
    tenant_id: str
    connection_id: str
    created_at: float
    updated_at: float
    ttl: int
    handler: str = ""
    payload: Any = None
    metadata: Any = None
    priority: int = 0
    attempt: int = 1
    max_attempts: int = 3
    timeout: float = 30.0
    owner: str | None = None
    claim_expires_at: float | None = None
    not_before: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    recoveries: int = 0
    permissions: tuple[str, ...] = ()
    #: Set by a router that offers the request to a processor right after writing it
    #: (direct dispatch): until then the stream reader leaves it to that offer.
    offer_until: float | None = None
    #: The live claim's fencing token (kept on the item after the claim's terminal write).
    claim_token: str | None = None
    #: Set by ``$subscribe`` (and re-attaching) after writing a subscription: the
    #: processor queries the subscriptions table only for requests that carry it.
    subscribed: bool = False
    #: W3C traceparent of the span the request was created in (streamer/tracing.py), so the
    #: processor's work joins the trace whichever way it gets the request; None untraced.
    traceparent: str | None = None
    #: The connect pod that held ``connection_id`` when the request was made (its
    #: Connections address, as connect said in RouteRequest). The connection never moves
    #: (a reconnect is a new connection, attached as a subscriber), so the processor
    #: sends the owner's frames there without reading the connection record; a pod that
    #: answers NOT_FOUND proves it gone as before. None when unknown (looked up).
    connection_endpoint: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def user_key(self) -> str:
        return user_key(self.tenant_id, self.user_id)

    @property
    def client_request_id(self) -> str:
        """The id the client gave (frames, handlers, logs); ``request_id`` is the key."""
        return client_request_id(self.request_id)

    @classmethod
    def new(
        cls,
        *,
        request_id: str,
        action: str,
        user_id: str,
        tenant_id: str,
        connection_id: str,
        payload: Any,
        connection_endpoint: str = "",
        metadata: Any = None,
        handler: str = "",
        priority: int = 0,
        max_attempts: int = 3,
        timeout: float = 30.0,
        ttl_seconds: float = REQUEST_TTL_SECONDS,
        permissions: tuple[str, ...] | list[str] = (),
        offer_grace: float | None = None,
    ) -> RequestRecord:
        """A new PENDING request; ``request_id`` is the *client's* id (the key is built here)."""
        t = now()
        return cls(
            request_id=request_key(tenant_id, request_id),
            action=action,
            status=PENDING,
            user_id=user_id,
            tenant_id=tenant_id,
            connection_id=connection_id,
            created_at=t,
            updated_at=t,
            ttl=int(t + ttl_seconds),
            handler=handler,
            payload=payload,
            metadata=metadata,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            permissions=tuple(permissions),
            offer_until=t + offer_grace if offer_grace is not None else None,
            traceparent=tracing.current_traceparent(),
            connection_endpoint=(connection_endpoint or None) if connection_id else None,
        )

    def to_item(self) -> dict[str, Any]:
        item = dataclasses.asdict(self)
        for name in _JSON_FIELDS:
            item[name] = json.dumps(item[name], separators=(",", ":")) if item[name] is not None else None
        item["user_key"] = self.user_key
        item["permissions"] = list(self.permissions)
        # A request submitted by a backend (Router.Submit) has no connection of its
        # own; an empty string cannot be a connection-index key, so it is left out.
        item["connection_id"] = self.connection_id or None
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RequestRecord:
        values = record_from_item(cls, item)
        for name in _JSON_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = json.loads(values[name])
        values["permissions"] = tuple(values.get("permissions") or ())
        values.setdefault("connection_id", "")
        return cls(**values)


class RequestStore(TableStore):
    """The requests table (key ``request_id``; connection, status and user indexes)."""

    async def create(self, record: RequestRecord) -> RequestRecord:
        """Write a new PENDING request; :class:`AlreadyExists` (with the existing one) if the id is taken."""
        if not await self._create(record.to_item(), key="request_id"):
            raise AlreadyExists(record.request_id, await self.get(record.request_id))
        return record

    def tables(self) -> list[RequestStore]:
        """Every requests table this store reads, one store each (here: just this one)."""
        return [self]

    async def get(self, request_id: str) -> RequestRecord | None:
        out = await self._call("get_item", Key={"request_id": serialize(request_id)}, ConsistentRead=True)
        item = out.get("Item")
        if not item or "status" not in item:  # none, or an id marker (streamer.store.queues)
            return None
        return RequestRecord.from_item(deserialize_item(item))

    async def require(self, request_id: str) -> RequestRecord:
        record = await self.get(request_id)
        if record is None:
            raise NotFound(request_id)
        return record

    async def _update(
        self,
        request_id: str,
        *,
        condition: str,
        expected: str,
        set_values: dict[str, Any],
        remove: tuple[str, ...] = (),
        add: dict[str, int] | None = None,
        values: dict[str, Any] | None = None,
    ) -> RequestRecord:
        """One conditional UpdateItem; returns the new record or raises TransitionRefused.

        A refusal carries the item as it is (``ALL_OLD`` on the failed condition). When
        that item bears this very write's ``updated_at`` stamp, the write had landed
        (its answer was lost and the SDK's retry met it): it is returned as a success.
        """
        names: dict[str, str] = {}
        for alias, real in (("#status", "status"), ("#owner", "owner")):
            if alias in condition:
                names[alias] = real
        parts_set = []
        all_values: dict[str, Any] = dict(values or {})
        for i, (name, value) in enumerate(set_values.items()):
            names[f"#s{i}"] = name
            if name in _JSON_FIELDS and value is not None:
                value = json.dumps(value, separators=(",", ":"))
            all_values[f"s{i}"] = value
            parts_set.append(f"#s{i} = :s{i}")
        clauses = []
        if parts_set:
            clauses.append("SET " + ", ".join(parts_set))
        if remove:
            for i, name in enumerate(remove):
                names[f"#r{i}"] = name
            clauses.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove))))
        if add:
            for i, (name, amount) in enumerate(add.items()):
                names[f"#a{i}"] = name
                all_values[f"a{i}"] = amount
            clauses.append("ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(add))))
        try:
            out = await self.client.update_item(
                TableName=self.table,
                Key={"request_id": serialize(request_id)},
                UpdateExpression=" ".join(clauses),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=expression(all_values),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except BOTO_ERRORS as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise wrap_error(exc, f"UpdateItem {self.table}") from exc
            item = exc.response.get("Item") if isinstance(exc, ClientError) else None
            current = RequestRecord.from_item(deserialize_item(item)) if item else await self.get(request_id)
            stamp = set_values.get("updated_at")
            if current is not None and stamp is not None and current.updated_at == stamp:
                return current  # our own write, landed on an earlier try
            raise TransitionRefused(request_id, expected, current) from exc
        return RequestRecord.from_item(deserialize_item(out["Attributes"]))

    _OWNED = "#status = :processing AND #owner = :owner AND attempt = :attempt"

    async def _owned_update(
        self,
        request_id: str,
        *,
        owner: str,
        attempt: int,
        token: str | None,
        set_values: dict[str, Any],
        remove: tuple[str, ...] = (),
        add: dict[str, int] | None = None,
        also: str = "",
        values: dict[str, Any] | None = None,
    ) -> RequestRecord:
        """An update only the claim holder may make: PROCESSING, this owner, attempt and token.

        ``token`` None fences a claim made before claims had tokens (a rolling upgrade).
        """
        fence = "claim_token = :token" if token is not None else "attribute_not_exists(claim_token)"
        try:
            return await self._update(
                request_id,
                condition=f"{self._OWNED} AND {fence}" + (f" AND {also}" if also else ""),
                expected=f"PROCESSING by {owner} at attempt {attempt} (this claim)"
                + (f" ({also})" if also else ""),
                set_values=set_values,
                remove=remove,
                add=add,
                values={
                    "processing": PROCESSING,
                    "owner": owner,
                    "attempt": attempt,
                    **({"token": token} if token is not None else {}),
                    **(values or {}),
                },
            )
        except TransitionRefused as exc:
            current = exc.current
            if (
                current is not None
                and token is not None
                and current.claim_token == token
                and current.owner == owner
                and current.attempt == attempt
                and current.terminal
                and all(
                    getattr(current, name, None) == value
                    for name, value in set_values.items()
                    if name not in _WRITE_STAMPS
                )
            ):
                # This claim already ended the request this very way (same status, same
                # result or error): an earlier call of the same ending landed though its
                # caller saw a failure (the answer was lost and the SDK's retries ran out),
                # and this call is the caller trying again. Only this claim (its token)
                # can have written that terminal state.
                return current
            raise

    async def claim(
        self, request_id: str, *, owner: str, attempt: int, claim_seconds: float
    ) -> RequestRecord:
        """PENDING → PROCESSING for ``owner`` (only at ``attempt`` and past ``not_before``).

        The claim gets a new ``claim_token``; every later write of this claim passes it.
        This is the one claim path (stream, sweeper and direct offers all call it).
        """
        t = now()
        return await self._update(
            request_id,
            condition=(
                "#status = :pending AND attempt = :attempt "
                "AND (attribute_not_exists(not_before) OR not_before <= :now)"
            ),
            expected=f"PENDING at attempt {attempt}",
            set_values={
                "status": PROCESSING,
                "owner": owner,
                "claim_token": uuid.uuid4().hex,
                "claim_expires_at": t + claim_seconds,
                "started_at": t,
                "updated_at": t,
            },
            values={"pending": PENDING, "attempt": attempt, "now": t},
        )

    async def renew(
        self, request_id: str, *, owner: str, attempt: int, token: str | None, claim_seconds: float
    ) -> RequestRecord:
        """Extend the claim; the returned record tells whether a cancel was requested."""
        t = now()
        return await self._owned_update(
            request_id,
            owner=owner,
            attempt=attempt,
            token=token,
            set_values={"claim_expires_at": t + claim_seconds},
        )

    async def save_progress(
        self, request_id: str, *, owner: str, attempt: int, token: str | None, progress: dict[str, Any]
    ) -> RequestRecord:
        """Persist the latest progress (the processor throttles how often)."""
        return await self._owned_update(
            request_id,
            owner=owner,
            attempt=attempt,
            token=token,
            set_values={"progress": progress, "updated_at": now()},
        )

    async def complete(
        self,
        request_id: str,
        *,
        owner: str,
        attempt: int,
        token: str | None,
        result: Any,
        progress: dict[str, Any] | None = None,
    ) -> RequestRecord:
        """PROCESSING → COMPLETED with the result; refused if anything else got there first."""
        t = now()
        sets: dict[str, Any] = {"status": COMPLETED, "result": result, "finished_at": t, "updated_at": t}
        if progress is not None:
            sets["progress"] = progress
        return await self._owned_update(
            request_id,
            owner=owner,
            attempt=attempt,
            token=token,
            set_values=sets,
            remove=("claim_expires_at",),
        )

    async def fail(
        self, request_id: str, *, owner: str, attempt: int, token: str | None, error: dict[str, Any]
    ) -> RequestRecord:
        """PROCESSING → FAILED with an error ``{code, message, ...}``."""
        t = now()
        return await self._owned_update(
            request_id,
            owner=owner,
            attempt=attempt,
            token=token,
            set_values={"status": FAILED, "error": error, "finished_at": t, "updated_at": t},
            remove=("claim_expires_at",),
        )

    async def retry(
        self,
        request_id: str,
        *,
        owner: str,
        attempt: int,
        token: str | None,
        not_before: float,
        error: dict[str, Any],
        progress: dict[str, Any] | None = None,
    ) -> RequestRecord:
        """PROCESSING → PENDING for the next attempt, not before ``not_before``.

        ``progress`` (the last one sent) is saved with it, so the next attempt's
        progress ``seq`` continues where this one stopped.
        """
        sets: dict[str, Any] = {
            "status": PENDING,
            "attempt": attempt + 1,
            "not_before": not_before,
            "error": error,
            "updated_at": now(),
        }
        if progress is not None:
            sets["progress"] = progress
        return await self._owned_update(
            request_id,
            owner=owner,
            attempt=attempt,
            token=token,
            set_values=sets,
            remove=("owner", "claim_expires_at", "claim_token"),
        )

    async def release(
        self,
        request_id: str,
        *,
        owner: str,
        attempt: int,
        token: str | None,
        progress: dict[str, Any] | None = None,
    ) -> RequestRecord:
        """PROCESSING → PENDING at the same attempt: the owner hands the request back.

        A draining processor uses it for requests it claimed but will not finish, so
        another processor picks them up from the stream at once instead of after the
        claim expires. Not the handler's failure, so no attempt is used up.
        """
        sets: dict[str, Any] = {"status": PENDING, "updated_at": now()}
        if progress is not None:
            sets["progress"] = progress
        return await self._owned_update(
            request_id,
            owner=owner,
            attempt=attempt,
            token=token,
            set_values=sets,
            remove=("owner", "claim_expires_at", "not_before", "claim_token"),
        )

    async def finish_cancel(
        self, request_id: str, *, owner: str, attempt: int, token: str | None
    ) -> RequestRecord:
        """PROCESSING (cancel requested) → CANCELLED, by the owner that stopped the handler."""
        t = now()
        return await self._owned_update(
            request_id,
            owner=owner,
            attempt=attempt,
            token=token,
            set_values={
                "status": CANCELLED,
                "error": {"code": "CANCELLED", "message": "Request was cancelled"},
                "finished_at": t,
                "updated_at": t,
            },
            remove=("claim_expires_at",),
        )

    async def release_expired(
        self, request_id: str, *, owner: str, attempt: int, token: str | None, skew: float = 0.0
    ) -> RequestRecord:
        """PROCESSING with an expired claim → PENDING (its processor died); same attempt.

        A crash is not the handler's failure, so it does not use up an attempt; the
        ``recoveries`` counter records it. The condition on the claim and the expiry
        means a live owner that just renewed keeps its claim. ``skew`` (the clock skew
        tolerated between processors) is added to the expiry: a claim written by an
        owner whose clock runs behind ours is not taken before it really expired.
        """
        t = now()
        return await self._owned_update(
            request_id,
            owner=owner,
            attempt=attempt,
            token=token,
            set_values={"status": PENDING, "updated_at": t},
            remove=("owner", "claim_expires_at", "not_before", "claim_token"),
            add={"recoveries": 1},
            also="claim_expires_at < :now",
            values={"now": t - skew},
        )

    async def mark_subscribed(self, request_id: str) -> RequestRecord | None:
        """Mark the request as having subscribers; the record as it is now (None if gone).

        Written *after* the subscription, so that of this write and the processor's
        final write (which returns the record, mark included) one sees the other: either
        the processor finds the mark and reads the subscribers, or this returns the
        outcome and the caller answers with it. The answer doubles as the re-read.
        """
        try:
            return await self._update(
                request_id,
                condition="attribute_exists(request_id)",
                expected="an existing request",
                set_values={"subscribed": True},
            )
        except TransitionRefused:
            return None

    async def cancel(self, request_id: str, *, tenant_id: str) -> RequestRecord:
        """``$cancel``: PENDING → CANCELLED at once; PROCESSING → cancel requested.

        A terminal request is returned unchanged. :class:`NotFound` when the request
        does not exist *or belongs to another tenant* (no existence leak).
        """
        t = now()
        try:
            return await self._update(
                request_id,
                condition="#status = :pending AND tenant_id = :tenant",
                expected="PENDING",
                set_values={
                    "status": CANCELLED,
                    "error": {"code": "CANCELLED", "message": "Request was cancelled"},
                    "finished_at": t,
                    "updated_at": t,
                },
                values={"pending": PENDING, "tenant": tenant_id},
            )
        except TransitionRefused as exc:
            current = exc.current
        if current is None or current.tenant_id != tenant_id:
            raise NotFound(request_id)
        if current.status != PROCESSING:
            return current  # type: ignore[no-any-return]
        try:
            return await self._update(
                request_id,
                condition="#status = :processing AND tenant_id = :tenant",
                expected="PROCESSING",
                set_values={"cancel_requested": True, "updated_at": t},
                values={"processing": PROCESSING, "tenant": tenant_id},
            )
        except TransitionRefused as exc:
            if exc.current is None:
                raise NotFound(request_id) from exc
            return exc.current  # type: ignore[no-any-return]

    async def expired_claims(
        self, *, now: float, skew: float = 0.0, page_size: int | None = None
    ) -> list[RequestRecord]:
        """PROCESSING requests whose claim expired before ``now - skew`` (their processor died).

        The status index is eventually consistent; the sweeper's conditional
        ``release_expired`` is what decides.
        """
        return [
            RequestRecord.from_item(item)
            async for item in self._query_pages(
                index="status-index",
                page_size=page_size,
                KeyConditionExpression="#status = :s",
                FilterExpression="claim_expires_at < :now",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=expression({"s": PROCESSING, "now": now - skew}),
            )
        ]

    async def stale_pending(
        self,
        *,
        unchanged_since: float,
        now: float,
        page_size: int | None = None,
        limit: int | None = None,
        scan_limit: int | None = None,
        accept: Callable[[RequestRecord], bool] | None = None,
    ) -> list[RequestRecord]:
        """PENDING requests not changed since ``unchanged_since`` and past their ``not_before``, oldest first.

        These are requests no processor picked up from the stream (a missed or
        trimmed record, or a processor that died holding a retry timer, or one a
        processor left because it held all the claims it may). A request not changed
        since then was also created before then, which bounds the query on the index's
        range key. ``limit``: at most this many (that ``accept`` takes, when given);
        ``scan_limit``: stop after reading this many, taken or not.
        """
        found: list[RequestRecord] = []
        read = 0
        pages = self._query_pages(
            index="status-index",
            page_size=page_size,
            KeyConditionExpression="#status = :s AND created_at < :since",
            FilterExpression=(
                "updated_at < :since AND (attribute_not_exists(not_before) OR not_before <= :now)"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=expression({"s": PENDING, "since": unchanged_since, "now": now}),
        )
        async with contextlib.aclosing(pages):
            async for item in pages:
                record = RequestRecord.from_item(item)
                read += 1
                if accept is None or accept(record):
                    found.append(record)
                    if limit is not None and len(found) >= limit:
                        break
                if scan_limit is not None and read >= scan_limit:
                    break
        return found

    async def count_by_handler(
        self, status: str, *, handler: str | None = None, page_size: int | None = None
    ) -> dict[str, tuple[int, float]]:
        """Per handler, the requests in ``status`` and the oldest one's ``created_at``.

        One query of the status index (projected to ``handler`` and ``created_at``,
        paged), optionally filtered to one ``handler``: the backlog measurement of the
        processors and the operator's fallback (docs/architecture.md, autoscaling).
        """
        names = {"#status": "status", "#handler": "handler"}
        values: dict[str, Any] = {"s": status}
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "#status = :s",
            "ProjectionExpression": "#handler, created_at",
            "ExpressionAttributeNames": names,
        }
        if handler is not None:
            kwargs["FilterExpression"] = "#handler = :h"
            values["h"] = handler
        kwargs["ExpressionAttributeValues"] = expression(values)
        out: dict[str, tuple[int, float]] = {}
        async for item in self._query_pages(index="status-index", page_size=page_size, **kwargs):
            name = str(item.get("handler") or "")
            created = float(item.get("created_at") or 0.0)
            count, oldest = out.get(name, (0, created))
            out[name] = (count + 1, min(oldest, created))
        return out

    async def by_connection(self, connection_id: str, *, page_size: int | None = None) -> list[RequestRecord]:
        return [
            RequestRecord.from_item(item)
            async for item in self._query_pages(
                index="connection-index",
                page_size=page_size,
                KeyConditionExpression="connection_id = :c",
                ExpressionAttributeValues=expression({"c": connection_id}),
            )
        ]

    async def by_user(
        self, *, tenant_id: str, user_id: str, since: float = 0.0, page_size: int | None = None
    ) -> list[RequestRecord]:
        """A user's requests created at or after ``since``, oldest first."""
        return [
            RequestRecord.from_item(item)
            async for item in self._query_pages(
                index="user-index",
                page_size=page_size,
                KeyConditionExpression="user_key = :u AND created_at >= :since",
                ExpressionAttributeValues=expression({"u": user_key(tenant_id, user_id), "since": since}),
            )
        ]

    async def resume_page(
        self,
        *,
        tenant_id: str,
        user_id: str,
        since: float,
        finished_since: float,
        limit: int,
        after: tuple[str, float] | None = None,
    ) -> tuple[list[RequestRecord], tuple[str, float] | None]:
        """One page of what ``$resume`` looks at: a user's requests, **newest first**.

        Only requests created at or after ``since`` that are unfinished or finished at or
        after ``finished_since`` (a filter on the server), projected to
        :data:`BRIEF_FIELDS`: never the payload, metadata or result, so a page costs a few
        hundred bytes per request whatever the results weigh. ``limit`` bounds the items
        DynamoDB reads for the page (the filter may return fewer). ``after`` is the
        (request_id, created_at) of the last request of the previous page; the second
        value returned is that of this page's last request read, None at the end.
        """
        names = {f"#f{i}": name for i, name in enumerate(BRIEF_FIELDS)}
        by_name = {name: alias for alias, name in names.items()}
        args: dict[str, Any] = {
            "IndexName": "user-index",
            "Limit": limit,
            "ScanIndexForward": False,
            "KeyConditionExpression": "user_key = :u AND created_at >= :since",
            "FilterExpression": (
                f"NOT {by_name['status']} IN (:c, :f, :x) OR {by_name['finished_at']} >= :recent "
                f"OR {by_name['updated_at']} >= :recent"
            ),
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": expression(
                {
                    "u": user_key(tenant_id, user_id),
                    "since": since,
                    "recent": finished_since,
                    "c": COMPLETED,
                    "f": FAILED,
                    "x": CANCELLED,
                }
            ),
        }
        if after is not None:
            args["ExclusiveStartKey"] = {
                "request_id": serialize(after[0]),
                "user_key": serialize(user_key(tenant_id, user_id)),
                "created_at": serialize(after[1]),
            }
        page = await self._call("query", **args)
        records = [RequestRecord.from_item(deserialize_item(item)) for item in page.get("Items", [])]
        last = page.get("LastEvaluatedKey")
        if not last:
            return records, None
        key = deserialize_item(last)
        return records, (str(key["request_id"]), float(key["created_at"]))

    async def by_status(
        self, status: str, *, created_before: float | None = None, page_size: int | None = None
    ) -> list[RequestRecord]:
        """Requests in one status (oldest first), optionally only those created before a time."""
        values: dict[str, Any]
        if created_before is None:
            cond, values = "#status = :s", {"s": status}
        else:
            cond, values = "#status = :s AND created_at < :before", {"s": status, "before": created_before}
        return [
            RequestRecord.from_item(item)
            async for item in self._query_pages(
                index="status-index",
                page_size=page_size,
                KeyConditionExpression=cond,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=expression(values),
            )
        ]
