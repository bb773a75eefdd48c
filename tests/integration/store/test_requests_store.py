"""The requests table's state machine on real DynamoDB Local."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamer.config import Settings, load_settings
from streamer.local.faultproxy import Fault, FaultProxy
from streamer.store import (
    AlreadyExists,
    NotFound,
    RequestRecord,
    Store,
    TransitionRefused,
)
from streamer.store.keys import request_key
from streamer.store.requests import CANCELLED, COMPLETED, FAILED, PENDING, PROCESSING


def K(rid: str, tenant: str = "t1") -> str:
    """The table key of the client id ``rid`` in ``tenant`` (ids are scoped per tenant)."""
    return request_key(tenant, rid)


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
    got = await store.requests.get(K("r-1"))
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
        *(store.requests.claim(K("r-1"), owner=f"w{i}", attempt=1, claim_seconds=10) for i in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, RequestRecord)]
    losers = [r for r in results if isinstance(r, TransitionRefused)]
    assert len(winners) == 1 and len(losers) == 4
    assert winners[0].status == PROCESSING
    assert losers[0].current.owner == winners[0].owner


async def test_complete_twice_is_refused(store: Store) -> None:
    await store.requests.create(_new())
    tok = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=10)).claim_token
    done = await store.requests.complete(K("r-1"), owner="w", attempt=1, token=tok, result={"ok": 1})
    assert done.status == COMPLETED and done.result == {"ok": 1}
    with pytest.raises(TransitionRefused):
        await store.requests.complete(K("r-1"), owner="w", attempt=1, token=tok, result={"ok": 2})
    with pytest.raises(TransitionRefused):
        await store.requests.fail(K("r-1"), owner="w", attempt=1, token=tok, error={"code": "X"})
    final = await store.requests.require(K("r-1"))
    assert final.result == {"ok": 1}


async def test_wrong_owner_or_attempt_cannot_write(store: Store) -> None:
    await store.requests.create(_new())
    tok = (await store.requests.claim(K("r-1"), owner="w1", attempt=1, claim_seconds=10)).claim_token
    with pytest.raises(TransitionRefused):
        await store.requests.complete(K("r-1"), owner="w2", attempt=1, token=tok, result=None)
    with pytest.raises(TransitionRefused):
        await store.requests.save_progress(
            K("r-1"), owner="w1", attempt=2, token=tok, progress={"percentage": 5}
        )
    rec = await store.requests.save_progress(
        K("r-1"), owner="w1", attempt=1, token=tok, progress={"percentage": 5, "seq": 1}
    )
    assert rec.progress == {"percentage": 5, "seq": 1}


async def test_retry_then_claim_respects_not_before(store: Store) -> None:
    await store.requests.create(_new())
    tok = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=10)).claim_token

    rec = await store.requests.retry(
        K("r-1"),
        owner="w",
        attempt=1,
        token=tok,
        not_before=time.time() + 60,
        error={"code": "PROCESSING_FAILED"},
    )
    assert rec.status == PENDING and rec.attempt == 2 and rec.owner is None
    with pytest.raises(TransitionRefused):  # too early
        tok = (await store.requests.claim(K("r-1"), owner="w", attempt=2, claim_seconds=10)).claim_token
    with pytest.raises(TransitionRefused):  # stale attempt
        tok = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=10)).claim_token


async def test_release_expired_only_when_expired(store: Store) -> None:
    await store.requests.create(_new())
    tok = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=30)).claim_token
    with pytest.raises(TransitionRefused):
        await store.requests.release_expired(K("r-1"), owner="w", attempt=1, token=tok)
    await store.requests.renew(K("r-1"), owner="w", attempt=1, token=tok, claim_seconds=-1)
    rec = await store.requests.release_expired(K("r-1"), owner="w", attempt=1, token=tok)
    assert rec.status == PENDING and rec.attempt == 1 and rec.recoveries == 1 and rec.owner is None
    # the old owner can no longer finish it
    with pytest.raises(TransitionRefused):
        await store.requests.complete(K("r-1"), owner="w", attempt=1, token=tok, result=None)


async def test_cancel_pending_processing_terminal_and_other_tenant(store: Store) -> None:
    await store.requests.create(_new("p"))
    assert (await store.requests.cancel(K("p"), tenant_id="t1")).status == CANCELLED
    with pytest.raises(TransitionRefused):
        tok = (await store.requests.claim(K("p"), owner="w", attempt=1, claim_seconds=5)).claim_token

    await store.requests.create(_new("q"))
    with pytest.raises(NotFound):
        await store.requests.cancel(K("q"), tenant_id="other")
    tok = (await store.requests.claim(K("q"), owner="w", attempt=1, claim_seconds=5)).claim_token
    rec = await store.requests.cancel(K("q"), tenant_id="t1")
    assert rec.status == PROCESSING and rec.cancel_requested
    renewed = await store.requests.renew(K("q"), owner="w", attempt=1, token=tok, claim_seconds=5)
    assert renewed.cancel_requested
    assert (await store.requests.finish_cancel(K("q"), owner="w", attempt=1, token=tok)).status == CANCELLED
    # terminal: unchanged
    assert (await store.requests.cancel(K("q"), tenant_id="t1")).status == CANCELLED
    with pytest.raises(NotFound):
        await store.requests.cancel(K("missing"), tenant_id="t1")


async def test_fail(store: Store) -> None:
    await store.requests.create(_new())
    tok = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=5)).claim_token
    rec = await store.requests.fail(
        K("r-1"), owner="w", attempt=1, token=tok, error={"code": "PROCESSING_FAILED", "message": "x"}
    )
    assert rec.status == FAILED and rec.error == {"code": "PROCESSING_FAILED", "message": "x"}


async def test_indexes_page_through_results(store: Store) -> None:
    for i in range(7):
        await store.requests.create(_new(f"r{i}", connection_id="cA" if i % 2 else "cB"))
    await store.requests.create(_new("other", user_id="u2"))
    by_conn = await store.requests.by_connection("cA", page_size=2)
    assert sorted(r.client_request_id for r in by_conn) == ["r1", "r3", "r5"]
    pending = await store.requests.by_status(PENDING, page_size=3)
    assert len(pending) == 8
    assert [r.created_at for r in pending] == sorted(r.created_at for r in pending)
    mine = await store.requests.by_user(tenant_id="t1", user_id="u1", page_size=2)
    assert len(mine) == 7
    assert await store.requests.by_user(tenant_id="t2", user_id="u1") == []

    assert await store.requests.by_status(PENDING, created_before=time.time() - 3600) == []


async def test_a_new_claim_by_the_same_owner_fences_the_old_one(store: Store) -> None:
    """Regression (#18 item 2): (owner, attempt) was the fence, so a job whose claim lapsed
    could still write after its own processor claimed the request again."""
    await store.requests.create(_new())
    old = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=30)).claim_token
    await store.requests.renew(K("r-1"), owner="w", attempt=1, token=old, claim_seconds=-1)
    await store.requests.release_expired(K("r-1"), owner="w", attempt=1, token=old)
    new = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=30)).claim_token
    assert old and new and old != new
    with pytest.raises(TransitionRefused):
        await store.requests.renew(K("r-1"), owner="w", attempt=1, token=old, claim_seconds=30)
    with pytest.raises(TransitionRefused):
        await store.requests.complete(K("r-1"), owner="w", attempt=1, token=old, result={"stale": True})
    done = await store.requests.complete(K("r-1"), owner="w", attempt=1, token=new, result={"ok": 1})
    assert done.status == COMPLETED and done.claim_token == new


async def test_an_expired_claim_is_released_only_past_the_tolerated_skew(store: Store) -> None:
    await store.requests.create(_new())
    tok = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=-2)).claim_token
    assert [r.client_request_id for r in await store.requests.expired_claims(now=time.time())] == ["r-1"]
    assert await store.requests.expired_claims(now=time.time(), skew=5) == []
    with pytest.raises(TransitionRefused):
        await store.requests.release_expired(K("r-1"), owner="w", attempt=1, token=tok, skew=5)
    rec = await store.requests.release_expired(K("r-1"), owner="w", attempt=1, token=tok, skew=0.5)
    assert rec.status == PENDING and rec.claim_token is None and rec.recoveries == 1


async def test_a_transition_whose_answer_was_lost_is_recognised_as_ours(
    store: Store, settings: Settings
) -> None:
    """Regression (#18 item 3): the SDK's retry of a landed write met its own condition and
    the outcome was taken as lost. The refusal's item (ALL_OLD) bears our own stamp."""
    await store.requests.create(_new())
    async with FaultProxy(settings.dynamodb_endpoint or "", seed=1) as proxy:
        s = load_settings({}, dynamodb_endpoint=proxy.endpoint, table_prefix=settings.table_prefix)
        async with Store.open(settings=s) as flaky:
            proxy.set_faults([Fault(kind="ambiguous", ops=frozenset({"UpdateItem"}))])
            claimed = await flaky.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=30)
            assert claimed.status == PROCESSING and claimed.owner == "w" and claimed.claim_token
            done = await flaky.requests.complete(
                K("r-1"), owner="w", attempt=1, token=claimed.claim_token, result={"ok": 1}
            )
            assert done.status == COMPLETED and done.result == {"ok": 1}
            assert proxy.injected("ambiguous") == 2
            # Someone else's transition is still refused, with the item as it is.
            with pytest.raises(TransitionRefused) as info:
                await flaky.requests.fail(K("r-1"), owner="w", attempt=1, token="other", error={"code": "X"})
            assert info.value.current is not None and info.value.current.status == COMPLETED


async def test_the_same_ending_written_again_by_its_claim_is_recognised(store: Store) -> None:
    """A terminal write that landed while its caller saw only failures is tried again by the
    processor: the store answers with the ending already written, not a refusal (which
    would mean "someone else decided" and the client would never hear)."""
    await store.requests.create(_new())
    tok = (await store.requests.claim(K("r-1"), owner="w", attempt=1, claim_seconds=10)).claim_token
    first = await store.requests.complete(K("r-1"), owner="w", attempt=1, token=tok, result={"ok": 1})
    again = await store.requests.complete(K("r-1"), owner="w", attempt=1, token=tok, result={"ok": 1})
    assert again.status == COMPLETED and again.result == {"ok": 1} and again.updated_at == first.updated_at
    with pytest.raises(TransitionRefused):  # another claim's token: not ours
        await store.requests.complete(K("r-1"), owner="w", attempt=1, token="other", result={"ok": 1})
