"""The requests table's state machine on real DynamoDB Local."""

from __future__ import annotations

import asyncio

import pytest

from streamer.store import (
    AlreadyExists,
    NotFound,
    RequestRecord,
    Store,
    TransitionRefused,
)
from streamer.store.requests import CANCELLED, COMPLETED, FAILED, PENDING, PROCESSING


def _new(rid: str = "r-1", **kw: object) -> RequestRecord:
    args: dict[str, object] = {
        "request_id": rid,
        "action": "delay",
        "user_id": "u1",
        "tenant_id": "t1",
        "connection_id": "c1",
        "payload": {"seconds": 1.5, "nested": {"list": [1, "two", None, True]}},
        "metadata": {"priority": 3},
    }
    args.update(kw)
    return RequestRecord.new(**args)  # type: ignore[arg-type]


async def test_create_and_get_roundtrip(store: Store) -> None:
    rec = _new()
    await store.requests.create(rec)
    got = await store.requests.get("r-1")
    assert got == rec
    assert got is not None and got.payload["seconds"] == 1.5
    assert got.ttl > got.created_at + 6 * 24 * 3600


async def test_create_twice_raises_with_existing(store: Store) -> None:
    await store.requests.create(_new())
    with pytest.raises(AlreadyExists) as err:
        await store.requests.create(_new(user_id="someone-else"))
    assert err.value.existing.user_id == "u1"


async def test_claim_is_won_once(store: Store) -> None:
    await store.requests.create(_new())
    results = await asyncio.gather(
        *(store.requests.claim("r-1", owner=f"w{i}", attempt=1, claim_seconds=10) for i in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, RequestRecord)]
    losers = [r for r in results if isinstance(r, TransitionRefused)]
    assert len(winners) == 1 and len(losers) == 4
    assert winners[0].status == PROCESSING
    assert losers[0].current.owner == winners[0].owner


async def test_complete_twice_is_refused(store: Store) -> None:
    await store.requests.create(_new())
    await store.requests.claim("r-1", owner="w", attempt=1, claim_seconds=10)
    done = await store.requests.complete("r-1", owner="w", attempt=1, result={"ok": 1})
    assert done.status == COMPLETED and done.result == {"ok": 1}
    with pytest.raises(TransitionRefused):
        await store.requests.complete("r-1", owner="w", attempt=1, result={"ok": 2})
    with pytest.raises(TransitionRefused):
        await store.requests.fail("r-1", owner="w", attempt=1, error={"code": "X"})
    final = await store.requests.require("r-1")
    assert final.result == {"ok": 1}


async def test_wrong_owner_or_attempt_cannot_write(store: Store) -> None:
    await store.requests.create(_new())
    await store.requests.claim("r-1", owner="w1", attempt=1, claim_seconds=10)
    with pytest.raises(TransitionRefused):
        await store.requests.complete("r-1", owner="w2", attempt=1, result=None)
    with pytest.raises(TransitionRefused):
        await store.requests.save_progress("r-1", owner="w1", attempt=2, progress={"percentage": 5})
    rec = await store.requests.save_progress(
        "r-1", owner="w1", attempt=1, progress={"percentage": 5, "seq": 1}
    )
    assert rec.progress == {"percentage": 5, "seq": 1}


async def test_retry_then_claim_respects_not_before(store: Store) -> None:
    await store.requests.create(_new())
    await store.requests.claim("r-1", owner="w", attempt=1, claim_seconds=10)
    import time

    rec = await store.requests.retry(
        "r-1", owner="w", attempt=1, not_before=time.time() + 60, error={"code": "PROCESSING_FAILED"}
    )
    assert rec.status == PENDING and rec.attempt == 2 and rec.owner is None
    with pytest.raises(TransitionRefused):  # too early
        await store.requests.claim("r-1", owner="w", attempt=2, claim_seconds=10)
    with pytest.raises(TransitionRefused):  # stale attempt
        await store.requests.claim("r-1", owner="w", attempt=1, claim_seconds=10)


async def test_release_expired_only_when_expired(store: Store) -> None:
    await store.requests.create(_new())
    await store.requests.claim("r-1", owner="w", attempt=1, claim_seconds=30)
    with pytest.raises(TransitionRefused):
        await store.requests.release_expired("r-1", owner="w", attempt=1)
    await store.requests.renew("r-1", owner="w", attempt=1, claim_seconds=-1)
    rec = await store.requests.release_expired("r-1", owner="w", attempt=1)
    assert rec.status == PENDING and rec.attempt == 1 and rec.recoveries == 1 and rec.owner is None
    # the old owner can no longer finish it
    with pytest.raises(TransitionRefused):
        await store.requests.complete("r-1", owner="w", attempt=1, result=None)


async def test_cancel_pending_processing_terminal_and_other_tenant(store: Store) -> None:
    await store.requests.create(_new("p"))
    assert (await store.requests.cancel("p", tenant_id="t1")).status == CANCELLED
    with pytest.raises(TransitionRefused):
        await store.requests.claim("p", owner="w", attempt=1, claim_seconds=5)

    await store.requests.create(_new("q"))
    with pytest.raises(NotFound):
        await store.requests.cancel("q", tenant_id="other")
    await store.requests.claim("q", owner="w", attempt=1, claim_seconds=5)
    rec = await store.requests.cancel("q", tenant_id="t1")
    assert rec.status == PROCESSING and rec.cancel_requested
    renewed = await store.requests.renew("q", owner="w", attempt=1, claim_seconds=5)
    assert renewed.cancel_requested
    assert (await store.requests.finish_cancel("q", owner="w", attempt=1)).status == CANCELLED
    # terminal: unchanged
    assert (await store.requests.cancel("q", tenant_id="t1")).status == CANCELLED
    with pytest.raises(NotFound):
        await store.requests.cancel("missing", tenant_id="t1")


async def test_fail(store: Store) -> None:
    await store.requests.create(_new())
    await store.requests.claim("r-1", owner="w", attempt=1, claim_seconds=5)
    rec = await store.requests.fail(
        "r-1", owner="w", attempt=1, error={"code": "PROCESSING_FAILED", "message": "x"}
    )
    assert rec.status == FAILED and rec.error == {"code": "PROCESSING_FAILED", "message": "x"}


async def test_indexes_page_through_results(store: Store) -> None:
    for i in range(7):
        await store.requests.create(_new(f"r{i}", connection_id="cA" if i % 2 else "cB"))
    await store.requests.create(_new("other", user_id="u2"))
    by_conn = await store.requests.by_connection("cA", page_size=2)
    assert sorted(r.request_id for r in by_conn) == ["r1", "r3", "r5"]
    pending = await store.requests.by_status(PENDING, page_size=3)
    assert len(pending) == 8
    assert [r.created_at for r in pending] == sorted(r.created_at for r in pending)
    mine = await store.requests.by_user(tenant_id="t1", user_id="u1", page_size=2)
    assert len(mine) == 7
    assert await store.requests.by_user(tenant_id="t2", user_id="u1") == []
    import time

    assert await store.requests.by_status(PENDING, created_before=time.time() - 3600) == []
