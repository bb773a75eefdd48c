"""Store methods added for the processor: release, expired_claims, stale_pending, retry(progress=)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from processor_helpers import Env

from streamer.store import PENDING, PROCESSING, RequestRecord, TransitionRefused


async def test_release_hands_back_at_the_same_attempt_only_for_the_owner(env: Env) -> None:
    rec = await env.submit("p_fast", connection_id="c")
    tok = (
        await env.store.requests.claim(rec.request_id, owner="w1", attempt=1, claim_seconds=30)
    ).claim_token
    with pytest.raises(TransitionRefused):
        await env.store.requests.release(rec.request_id, owner="w2", attempt=1, token=tok)
    back = await env.store.requests.release(
        rec.request_id, owner="w1", attempt=1, token=tok, progress={"seq": 4, "percentage": 40}
    )
    assert back.status == PENDING and back.attempt == 1
    assert back.owner is None and back.claim_expires_at is None
    assert back.progress == {"seq": 4, "percentage": 40}
    assert back.recoveries == 0
    with pytest.raises(TransitionRefused):
        await env.store.requests.release(rec.request_id, owner="w1", attempt=1, token=tok)


async def test_retry_keeps_the_last_progress(env: Env) -> None:
    rec = await env.submit("p_fast", connection_id="c")
    tok = (
        await env.store.requests.claim(rec.request_id, owner="w1", attempt=1, claim_seconds=30)
    ).claim_token
    out = await env.store.requests.retry(
        rec.request_id,
        owner="w1",
        attempt=1,
        token=tok,
        not_before=time.time() + 5,
        error={"code": "PROCESSING_FAILED", "message": "x"},
        progress={"seq": 9},
    )
    assert out.attempt == 2 and out.progress == {"seq": 9}


async def test_expired_claims_lists_only_processing_with_a_past_claim(env: Env) -> None:
    live = await env.submit("p_fast", connection_id="c")
    dead = await env.submit("p_fast", connection_id="c")
    await env.store.requests.claim(live.request_id, owner="w1", attempt=1, claim_seconds=60)
    await env.store.requests.claim(dead.request_id, owner="w2", attempt=1, claim_seconds=0.01)
    found = await env.store.requests.expired_claims(now=time.time() + 1)
    assert [r.request_id for r in found] == [dead.request_id]
    assert found[0].status == PROCESSING and found[0].owner == "w2"


async def test_stale_pending_skips_recent_changes_and_future_not_before(env: Env) -> None:
    now = time.time()
    old = now - 100

    def aged(**kw: Any) -> RequestRecord:
        record = env.new_request("p_fast", connection_id="c")
        return dataclasses.replace(record, created_at=old, updated_at=old, **kw)

    stale = aged()
    waiting = aged(not_before=now + 60)
    due = aged(not_before=now - 1)
    fresh = env.new_request("p_fast", connection_id="c")
    for record in (stale, waiting, due, fresh):
        await env.store.requests.create(record)
    found = {r.request_id for r in await env.store.requests.stale_pending(unchanged_since=now - 10, now=now)}
    assert found == {stale.request_id, due.request_id}
