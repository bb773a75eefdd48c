"""Requests through the real stack: connect → router → handler / DynamoDB → processor → connect."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from e2e_helpers import Recorder, connect, eventually

from streamer.client import (
    DuplicateRequestError,
    InvalidActionError,
    NotFoundError,
    PayloadTooLargeError,
    RequestCancelledError,
    StreamerClient,
    StreamerError,
    ValidationError,
)
from streamer.local.stack import LocalStack
from streamer.store import CANCELLED, COMPLETED, Store, request_key
from streamer.store.dynamo import serialize, serialize_item

REPORT = {"start_date": "2026-01-01", "end_date": "2026-01-31", "format": "csv", "report_type": "sales"}


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_sync_echo(stack: LocalStack) -> None:
    async with connect(stack) as client:
        result = await client.request("echo", {"message": "hello"}, timeout=30)
    assert result["message"] == "hello"


async def test_async_request_reports_ordered_progress_and_exactly_one_complete(stack: LocalStack) -> None:
    recorder = Recorder()
    request_id = rid("async")
    async with connect(stack, on_message=recorder) as client:
        handle = await client.start("echo_async", {"message": "hi", "timestamp": 7}, request_id=request_id)
        result = await handle.result(timeout=60)
        await asyncio.sleep(0.5)  # a duplicate complete would arrive about now
    assert result["message"] == "hi" and result["timestamp"] == 7
    kinds = [m["type"] for m in recorder.of(request_id)]
    assert kinds[0] == "acknowledgment"
    assert kinds[-1] == "complete" and kinds.count("complete") == 1
    # Progress may be coalesced under load (latest wins), but the first and the last
    # always go out, in order, numbered without gaps.
    progress = recorder.of(request_id, "progress")
    percentages = [p["percentage"] for p in progress]
    assert percentages[0] == 0 and percentages[-1] == 100
    assert percentages == sorted(percentages)
    assert set(percentages) <= {0, 25, 50, 75, 100}
    seqs = [p["seq"] for p in progress]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    async with Store.open(settings=stack.settings) as store:
        record = await store.requests.require(request_key("acme", request_id))
    assert record.status == COMPLETED and record.result == result


async def test_validation_error_names_the_field(stack: LocalStack) -> None:
    async with connect(stack) as client:
        try:
            await client.request("generate_report", {**REPORT, "start_date": "2026-13-01"}, timeout=30)
        except ValidationError as exc:
            assert any(d["path"] == "start_date" for d in exc.details)
        else:
            raise AssertionError("a bad date was accepted")


async def test_unknown_action(stack: LocalStack) -> None:
    async with connect(stack) as client:
        try:
            await client.request("no_such_action", {}, timeout=30)
        except InvalidActionError:
            pass
        else:
            raise AssertionError("an unknown action was accepted")


async def test_cancel_a_running_request(stack: LocalStack) -> None:
    request_id = rid("cancel")
    async with connect(stack) as client:
        first = asyncio.Event()
        handle = await client.start(
            "delay", {"seconds": 20, "steps": 40}, request_id=request_id, on_progress=lambda p: first.set()
        )
        await asyncio.wait_for(first.wait(), timeout=30)
        await client.cancel(request_id)
        try:
            await handle.result(timeout=30)
        except RequestCancelledError:
            pass
        else:
            raise AssertionError("the cancelled request completed")
    async with Store.open(settings=stack.settings) as store:
        record = await eventually(lambda: _terminal(store, request_id))
    assert record.status == CANCELLED


async def _terminal(store: Store, request_id: str) -> object:
    record = await store.requests.get(request_key("acme", request_id))
    return record if record is not None and record.terminal else None


async def test_dropped_connection_reconnects_and_resumes(stack: LocalStack) -> None:
    request_id = rid("drop")
    async with connect(stack) as client:
        first = asyncio.Event()
        handle = await client.start(
            "delay", {"seconds": 2, "steps": 4}, request_id=request_id, on_progress=lambda p: first.set()
        )
        await asyncio.wait_for(first.wait(), timeout=30)
        await client.drop_connection()
        result = await handle.result(timeout=60)
        assert client.reconnects >= 1
    assert result == {"seconds": 2, "steps": 4}


async def _away_while(stack: LocalStack, request_id: str, user: str, meanwhile: str) -> StreamerClient:
    """A client whose request finishes while it is away, and whose record is then aged or deleted.

    The client's reconnect waits (its token function blocks) until the request has finished
    and its record is either two days old — out of ``$resume``'s reach, which looks back 24 h
    and answers finished requests of the last 10 minutes — or gone (past its TTL). Then the
    client comes back with its request still pending.
    """
    gate = asyncio.Event()
    opens = 0

    async def token() -> str:
        nonlocal opens
        opens += 1
        if opens > 1:
            await gate.wait()
        return stack.token(user=user, tenant="acme")

    client = StreamerClient(stack.ws_url, token=token, reconnect_delay=0.05, resume_grace=0.5)
    await client.connect()
    handle = await client.start("delay", {"seconds": 1, "steps": 1}, request_id=request_id)
    await eventually(lambda: handle.acknowledged, timeout=30)
    await client.drop_connection()
    async with Store.open(settings=stack.settings) as store:
        key = request_key("acme", request_id)
        record = await eventually(lambda: _terminal(store, request_id), timeout=60)
        assert record.status == COMPLETED
        table = store.requests
        if meanwhile == "aged":
            two_days = 2 * 24 * 3600.0
            old = dataclasses.replace(
                record,
                created_at=record.created_at - two_days,
                updated_at=record.updated_at - two_days,
                finished_at=(record.finished_at or record.updated_at) - two_days,
            )
            await table.client.put_item(TableName=table.table, Item=serialize_item(old.to_item()))
        else:
            await table.client.delete_item(TableName=table.table, Key={"request_id": serialize(key)})
    assert not handle.done  # still pending: it finished while the client was away
    gate.set()
    return client


async def test_a_request_older_than_resume_reaches_still_settles_after_a_reconnect(stack: LocalStack) -> None:
    request_id = rid("aged")
    client = await _away_while(stack, request_id, rid("aged-user"), "aged")
    try:
        handle = client.handle(request_id)
        assert handle is not None
        assert await handle.result(timeout=60) == {"seconds": 1, "steps": 1}
        # Settled by the $subscribe answer (the stored outcome), not by $resume.
        assert handle.messages[-1]["type"] == "status" and not handle.messages[-1].get("resumed")
        assert client.reconnects == 1
    finally:
        await client.close()


async def test_a_request_whose_record_is_gone_ends_not_found_after_a_reconnect(stack: LocalStack) -> None:
    request_id = rid("gone")
    client = await _away_while(stack, request_id, rid("gone-user"), "deleted")
    try:
        handle = client.handle(request_id)
        assert handle is not None
        try:
            await handle.result(timeout=60)
        except NotFoundError as exc:
            assert exc.request_id == request_id
        else:
            raise AssertionError("a request with no record settled with a result")
    finally:
        await client.close()


async def test_a_new_connection_resumes_and_receives_the_result(stack: LocalStack) -> None:
    request_id = rid("resume")
    first_client = connect(stack, reconnect=False)
    await first_client.connect()
    first = asyncio.Event()
    await first_client.start(
        "delay", {"seconds": 2, "steps": 4}, request_id=request_id, on_progress=lambda p: first.set()
    )
    await asyncio.wait_for(first.wait(), timeout=30)
    await first_client.close()

    async with connect(stack) as second:
        events = second.events(request_id)  # follow it before the server re-attaches it
        handle = second.handle(request_id)
        assert handle is not None
        await second.resume()
        # The server answers $resume with the request's state and re-attaches it here.
        await eventually(lambda: any(m.get("resumed") for m in handle.messages), timeout=30)
        kinds = [m["type"] async for m in events]
        assert await handle.result(timeout=1) == {"seconds": 2, "steps": 4}
    assert kinds[0] == "status" and kinds[-1] in ("complete", "status")


async def test_a_second_connection_of_the_same_user_subscribes(stack: LocalStack) -> None:
    request_id = rid("sub")
    async with connect(stack) as owner, connect(stack) as watcher:
        first = asyncio.Event()
        handle = await owner.start(
            "delay", {"seconds": 2, "steps": 8}, request_id=request_id, on_progress=lambda p: first.set()
        )
        await asyncio.wait_for(first.wait(), timeout=30)
        sub = await watcher.subscribe(request_id)
        owner_result, watcher_result = await asyncio.gather(handle.result(timeout=60), sub.result(timeout=60))
    assert owner_result == watcher_result == {"seconds": 2, "steps": 8}
    assert any(m["type"] == "progress" for m in sub.messages)


async def test_another_tenant_can_neither_see_cancel_nor_subscribe(stack: LocalStack) -> None:
    request_id = rid("tenant")
    async with connect(stack, tenant="acme") as owner, connect(stack, user="mallory", tenant="evil") as other:
        handle = await owner.start("delay", {"seconds": 1.5, "steps": 3}, request_id=request_id)
        await eventually(lambda: handle.acknowledged, timeout=30)  # it is stored now
        for call in (other.status, other.cancel, other.subscribe):
            try:
                await call(request_id)
            except StreamerError as exc:
                assert exc.code in ("NOT_FOUND", "FORBIDDEN"), exc
            else:
                raise AssertionError(f"{call.__name__} of another tenant's request succeeded")
        # The foreign cancel had no effect.
        assert await handle.result(timeout=60) == {"seconds": 1.5, "steps": 3}
        try:
            await other.status("no-such-request")
        except NotFoundError:
            pass


async def test_resending_an_id_is_idempotent_and_another_user_gets_duplicate(stack: LocalStack) -> None:
    request_id = rid("idem")
    async with connect(stack) as client:
        first = await client.request("echo_async", {"message": "once"}, request_id=request_id, timeout=60)
    async with connect(stack) as again:
        second = await again.request("echo_async", {"message": "once"}, request_id=request_id, timeout=60)
    assert second == first  # same processed_at: it did not run twice
    async with connect(stack, user="bob") as bob:
        try:
            await bob.request("echo_async", {"message": "mine"}, request_id=request_id, timeout=30)
        except DuplicateRequestError:
            pass
        else:
            raise AssertionError("another user's id was accepted")


async def test_one_hundred_concurrent_clients(stack: LocalStack) -> None:
    async def one(i: int) -> object:
        async with connect(stack, user=f"user-{i}") as client:
            return await client.request("echo_async", {"message": f"m{i}"}, timeout=120)

    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert sorted(r["message"] for r in results) == sorted(f"m{i}" for i in range(100))  # type: ignore[index]


async def test_a_request_over_the_gateways_hard_frame_limit_fails_alone(stack: LocalStack) -> None:
    # Found by hand: a 600 KB request made the gateway close the socket (1009, no reconnect),
    # and every other request of the client failed with ConnectionClosedError.
    async with connect(stack) as client:
        running = await client.start("delay", {"seconds": 2, "steps": 2}, request_id=rid("beside-big"))
        with pytest.raises(PayloadTooLargeError) as info:
            await client.request("echo", {"message": "x" * 600_000}, request_id=rid("big"), timeout=30)
        assert info.value.details["limit"] == 512 * 1024
        soft = "x" * 140_000  # over the soft limit: the gateway answers, the socket stays
        with pytest.raises(PayloadTooLargeError):
            await client.request("echo", {"message": soft}, request_id=rid("soft"), timeout=30)
        assert (await running.result(timeout=60))["steps"] == 2
        assert client.last_close_code is None
