"""System actions over real gRPC and DynamoDB Local, each one's tenant isolation included."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from router_helpers import Route

from services.router.system_actions import RESUME_MAX_REQUESTS, RESUME_PAGE_BYTES, RESUME_PAGE_FRAMES
from streamer.store import CANCELLED, COMPLETED, PENDING, PROCESSING, RequestRecord, Store, request_key
from streamer.store.dynamo import serialize_item


async def make_request(
    store: Store,
    *,
    rid: str,
    user: str,
    tenant: str,
    connection: str = "conn-old",
    action: str = "echo_async",
) -> RequestRecord:
    return await store.requests.create(
        RequestRecord.new(
            request_id=rid,
            action=action,
            user_id=user,
            tenant_id=tenant,
            connection_id=connection,
            payload={"message": "m"},
            handler="examples",
        )
    )


async def put_raw(store: Store, record: RequestRecord) -> None:
    await store.client.put_item(TableName=store.requests.table, Item=serialize_item(record.to_item()))


def one(frames: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(frames) == 1, frames
    return frames[0]


def not_found(frames: list[dict[str, Any]], rid: str) -> None:
    frame = one(frames)
    assert frame["type"] == "error" and frame["error"]["code"] == "NOT_FOUND", frame
    assert frame["request_id"] == rid


async def test_ping(route: Route, ids: Callable[[str], str]) -> None:
    frame = one(await route("$ping", user=ids("u"), tenant=ids("t")))
    assert frame["type"] == "pong"


async def test_status_within_tenant_only(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    tenant, rid = ids("t"), ids("r")
    await make_request(router_store, rid=rid, user="alice", tenant=tenant)
    frame = one(await route("$status", user="alice", tenant=tenant, payload={"request_id": rid}))
    assert frame["type"] == "status" and frame["request_id"] == rid
    assert (frame["status"], frame["percentage"], frame["action"]) == (PENDING, 0, "echo_async")
    colleague = one(await route("$status", user="bob", tenant=tenant, payload={"request_id": rid}))
    assert colleague["status"] == PENDING  # the same tenant may look
    not_found(await route("$status", user="alice", tenant=ids("t"), payload={"request_id": rid}), rid)
    not_found(await route("$status", user="alice", tenant=tenant, payload={"request_id": "nope"}), "nope")


async def test_status_of_a_completed_request_carries_the_result(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    tenant, rid = ids("t"), ids("r")
    await make_request(router_store, rid=rid, user="alice", tenant=tenant)
    tok = (
        await router_store.requests.claim(request_key(tenant, rid), owner="w", attempt=1, claim_seconds=30)
    ).claim_token
    await router_store.requests.save_progress(
        request_key(tenant, rid),
        owner="w",
        attempt=1,
        token=tok,
        progress={"percentage": 40, "message": "Rendering"},
    )
    frame = one(await route("$status", user="alice", tenant=tenant, payload={"request_id": rid}))
    assert (frame["status"], frame["percentage"], frame["message"]) == (PROCESSING, 40, "Rendering")
    await router_store.requests.complete(
        request_key(tenant, rid), owner="w", attempt=1, token=tok, result={"ok": 1}
    )
    frame = one(await route("$status", user="alice", tenant=tenant, payload={"request_id": rid}))
    assert (frame["status"], frame["result"]) == (COMPLETED, {"ok": 1})


async def test_cancel_pending_and_processing(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    tenant, pending, running = ids("t"), ids("r"), ids("r")
    await make_request(router_store, rid=pending, user="alice", tenant=tenant)
    frame = one(await route("$cancel", user="alice", tenant=tenant, payload={"request_id": pending}))
    assert frame["type"] == "status" and frame["status"] == CANCELLED
    record = await router_store.requests.get(request_key(tenant, pending))
    assert record is not None and record.status == CANCELLED

    await make_request(router_store, rid=running, user="alice", tenant=tenant)
    await router_store.requests.claim(request_key(tenant, running), owner="w", attempt=1, claim_seconds=30)
    frame = one(await route("$cancel", user="alice", tenant=tenant, payload={"request_id": running}))
    assert (frame["status"], frame["cancel_requested"], frame["message"]) == (
        PROCESSING,
        True,
        "Cancellation requested",
    )
    record = await router_store.requests.get(request_key(tenant, running))
    assert record is not None and record.cancel_requested and record.status == PROCESSING


async def test_cancel_is_tenant_scoped(route: Route, router_store: Store, ids: Callable[[str], str]) -> None:
    tenant, rid = ids("t"), ids("r")
    await make_request(router_store, rid=rid, user="alice", tenant=tenant)
    not_found(await route("$cancel", user="alice", tenant=ids("t"), payload={"request_id": rid}), rid)
    record = await router_store.requests.get(request_key(tenant, rid))
    assert record is not None and record.status == PENDING


async def test_subscribe_and_unsubscribe(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    tenant, rid = ids("t"), ids("r")
    await make_request(router_store, rid=rid, user="alice", tenant=tenant)
    frame = one(
        await route(
            "$subscribe", user="bob", tenant=tenant, connection="conn-bob", payload={"request_id": rid}
        )
    )
    assert frame["type"] == "status" and frame["subscribed"] is True
    subs = await router_store.subscriptions.for_request(request_key(tenant, rid))
    assert [(s.connection_id, s.user_id, s.tenant_id) for s in subs] == [("conn-bob", "bob", tenant)]
    frame = one(
        await route(
            "$unsubscribe", user="bob", tenant=tenant, connection="conn-bob", payload={"request_id": rid}
        )
    )
    assert frame["subscribed"] is False
    assert await router_store.subscriptions.for_request(request_key(tenant, rid)) == []


async def test_subscribe_and_unsubscribe_are_tenant_scoped(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    tenant, rid = ids("t"), ids("r")
    await make_request(router_store, rid=rid, user="alice", tenant=tenant)
    other = ids("t")
    not_found(
        await route(
            "$subscribe", user="alice", tenant=other, connection="conn-x", payload={"request_id": rid}
        ),
        rid,
    )
    assert await router_store.subscriptions.for_request(request_key(tenant, rid)) == []
    await router_store.subscriptions.subscribe(
        request_id=request_key(tenant, rid), connection_id="conn-a", user_id="alice", tenant_id=tenant
    )
    not_found(
        await route(
            "$unsubscribe", user="alice", tenant=other, connection="conn-a", payload={"request_id": rid}
        ),
        rid,
    )
    assert len(await router_store.subscriptions.for_request(request_key(tenant, rid))) == 1


async def test_system_action_without_a_target_is_a_validation_error(
    route: Route, ids: Callable[[str], str]
) -> None:
    frame = one(await route("$status", request_id="r-s", user=ids("u"), tenant=ids("t"), payload={}))
    assert frame["error"]["code"] == "VALIDATION_ERROR" and frame["request_id"] == "r-s"


async def test_resume_reattaches_unfinished_and_recent_requests(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    user, tenant = ids("u"), ids("t")
    pending, running, recent, old = ids("pending"), ids("running"), ids("recent"), ids("old")
    await make_request(router_store, rid=pending, user=user, tenant=tenant)
    await make_request(router_store, rid=running, user=user, tenant=tenant)
    tok = (
        await router_store.requests.claim(
            request_key(tenant, running), owner="w", attempt=1, claim_seconds=30
        )
    ).claim_token
    await make_request(router_store, rid=recent, user=user, tenant=tenant)
    tok = (
        await router_store.requests.claim(request_key(tenant, recent), owner="w", attempt=1, claim_seconds=30)
    ).claim_token
    await router_store.requests.complete(
        request_key(tenant, recent), owner="w", attempt=1, token=tok, result={"r": 1}
    )
    long_ago = time.time() - 3600
    base = await make_request(router_store, rid=old, user=user, tenant=tenant)
    await put_raw(
        router_store,
        dataclasses.replace(
            base, status=COMPLETED, created_at=long_ago, updated_at=long_ago, finished_at=long_ago
        ),
    )
    # neither a colleague's request nor the same user id in another tenant is resumed
    await make_request(router_store, rid=ids("colleague"), user=ids("u"), tenant=tenant)
    await make_request(router_store, rid=ids("elsewhere"), user=user, tenant=ids("t"))

    frames = await route("$resume", user=user, tenant=tenant, connection="conn-new")
    by_id = {f["request_id"]: f for f in frames}
    assert set(by_id) == {pending, running, recent}
    assert all(f["type"] == "status" and f["resumed"] is True for f in frames)
    assert (by_id[pending]["status"], by_id[running]["status"], by_id[recent]["status"]) == (
        PENDING,
        PROCESSING,
        COMPLETED,
    )
    assert by_id[recent]["result"] == {"r": 1}
    assert by_id[pending]["subscribed"] is True and "subscribed" not in by_id[recent]
    for rid in (pending, running):
        subs = await router_store.subscriptions.for_request(request_key(tenant, rid))
        assert [s.connection_id for s in subs] == ["conn-new"]
    assert await router_store.subscriptions.for_request(request_key(tenant, recent)) == []


async def test_resume_with_nothing_to_resume(route: Route, ids: Callable[[str], str]) -> None:
    assert await route("$resume", user=ids("u"), tenant=ids("t")) == []


@pytest.mark.parametrize("sep", ["#", "|", ":", "/", "%", "1:", "#2:", "é", "租", "🙂"])
async def test_ids_holding_a_separator_never_reach_another_tenant(
    route: Route, router_store: Store, ids: Callable[[str], str], sep: str
) -> None:
    """Issue #18 item 6: user ``u#v`` of tenant ``t9``, then ``$resume`` by user ``v`` of
    tenant ``t9#u``: the second tenant received the first one's request (both keys were
    ``t9#u#v``). Tried with every separator a key could be built with."""
    t9 = ids("t9")
    victim_tenant, victim_user = t9, f"u{sep}v"
    other_tenant, other_user = f"{t9}{sep}u", "v"
    rid = f"r{sep}1"
    await make_request(router_store, rid=rid, user=victim_user, tenant=victim_tenant)
    assert await route("$resume", user=other_user, tenant=other_tenant, connection="conn-evil") == []
    not_found(await route("$status", user=other_user, tenant=other_tenant, payload={"request_id": rid}), rid)
    # a tenant whose name ends like the other's id: ("t9", "x#r") against ("t9#x", "r")
    not_found(
        await route(
            "$status", user=victim_user, tenant=f"{victim_tenant}{sep}r", payload={"request_id": "1"}
        ),
        "1",
    )
    assert await router_store.subscriptions.for_connection("conn-evil") == []
    # the victim still sees it, under the id it gave
    [mine] = await route("$resume", user=victim_user, tenant=victim_tenant, connection="conn-new")
    assert (mine["request_id"], mine["status"], mine["resumed"]) == (rid, PENDING, True)


async def test_resume_of_thousands_of_requests_with_large_results_is_paged(
    route: Route, router_store: Store, ids: Callable[[str], str]
) -> None:
    """Issue #18 item 5: ``$resume`` loaded every request of the last 24 h as full items and
    answered them in one gRPC message: with a hundred recent results of 60 KB the answer
    passed the 4 MiB cap (RESOURCE_EXHAUSTED, every time the client reconnected), and
    hundreds of unfinished requests overflowed connect's send queue. Now each answer is
    a page (frames and bytes bounded), and the client follows ``resume_cursor`` until every
    unfinished request has been mentioned and re-attached."""
    user, tenant = ids("u"), ids("t")
    t = time.time()
    big = {"blob": "x" * 60_000}
    unfinished: set[str] = set()
    finished_with_results: dict[str, Any] = {}
    records: list[RequestRecord] = []
    for i in range(1_500):
        rid = f"{ids('r')}-{i}"
        base = RequestRecord.new(
            request_id=rid,
            action="echo_async",
            user_id=user,
            tenant_id=tenant,
            connection_id="conn-old",
            payload={"message": "m" * 2_000},  # payloads are never read either
            handler="examples",
        )
        created = t - 3_000 + i
        if i % 5 == 0:  # 300 unfinished, spread among the finished ones
            unfinished.add(rid)
            records.append(dataclasses.replace(base, created_at=created, updated_at=created))
            continue
        newest = i >= 1_300  # the newest finished ones carry large results
        result = big if newest else {"n": i}
        if newest:
            finished_with_results[rid] = result
        records.append(
            dataclasses.replace(
                base,
                status=COMPLETED,
                created_at=created,
                updated_at=t - 60,
                finished_at=t - 60,
                result=result,
            )
        )
    gate = asyncio.Semaphore(16)

    async def put(record: RequestRecord) -> None:
        async with gate:
            await put_raw(router_store, record)

    await asyncio.gather(*(put(r) for r in records))

    seen: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    answers = 0
    while True:
        frames = await route(
            "$resume",
            user=user,
            tenant=tenant,
            connection="conn-new",
            payload={"cursor": cursor} if cursor else {},
        )
        answers += 1
        size = sum(len(json.dumps(f).encode()) for f in frames)
        assert size <= RESUME_PAGE_BYTES + 2 * len(json.dumps(big)), f"answer {answers}: {size} bytes"
        assert 0 < len(frames) <= RESUME_PAGE_FRAMES
        for frame in frames:
            assert frame["type"] == "status" and frame["resumed"] is True
            assert frame["request_id"] not in seen, "a request was answered on two pages"
            seen[frame["request_id"]] = frame
        assert all("resume_cursor" not in f for f in frames[:-1])
        cursor = frames[-1].get("resume_cursor")
        if cursor is None:
            break
        assert answers < 100, "the pages never end"
    assert answers > 1
    assert unfinished <= set(seen), f"{len(unfinished - set(seen))} unfinished requests never mentioned"
    assert all(seen[rid]["subscribed"] is True for rid in unfinished)
    # the newest finished ones (RESUME_MAX_REQUESTS of them), with their results
    finished = {rid: f for rid, f in seen.items() if f["status"] == COMPLETED}
    assert len(finished) == RESUME_MAX_REQUESTS
    assert all(finished_with_results.get(rid) == f["result"] for rid, f in finished.items())
    some = sorted(unfinished)[:5]
    for rid in some:
        subs = await router_store.subscriptions.for_request(request_key(tenant, rid))
        assert [s.connection_id for s in subs] == ["conn-new"]


async def test_resume_refuses_a_cursor_it_did_not_make(route: Route, ids: Callable[[str], str]) -> None:
    for cursor in ("not-base64!", "e30=", 17):
        [frame] = await route("$resume", user=ids("u"), tenant=ids("t"), payload={"cursor": cursor})
        assert frame["type"] == "error" and frame["error"]["code"] == "VALIDATION_ERROR"
