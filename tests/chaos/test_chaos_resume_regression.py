"""``$resume`` must re-attach every unfinished request, however many finished ones are recent.

Found while designing the chaos run's load: ``SystemActions.resume`` keeps the newest
``RESUME_MAX_REQUESTS`` (100) of "unfinished or finished in the last 10 minutes", so a
client with 100 recent finished requests and one older request still running gets
nothing back for the running one after a reconnect: it is not re-attached to the new
connection, its ``complete`` goes to the dead one, and the client never hears. A busy
client (a dashboard firing many short requests next to one long export) hits this.

Runs the router's system action against a real store (DynamoDB Local), no processes.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from services.router.call import Call
from services.router.system_actions import RESUME_MAX_REQUESTS, SystemActions
from streamer.store import COMPLETED, PROCESSING, RequestRecord, Store


async def test_resume_reattaches_an_old_unfinished_request_behind_many_finished_ones(store: Store) -> None:
    user, tenant = "busy-user", "tenant-r"
    old_conn, new_conn = "conn-old", "conn-new"
    now = time.time()
    running = dataclasses.replace(
        RequestRecord.new(
            request_id=f"long-{uuid.uuid4().hex[:8]}",
            action="delay",
            user_id=user,
            tenant_id=tenant,
            connection_id=old_conn,
            payload={"seconds": 600},
        ),
        status=PROCESSING,
        created_at=now - 60,
        updated_at=now - 60,
        owner="processor-x",
        claim_expires_at=now + 60,
    )
    await store.requests.create(running)
    for i in range(RESUME_MAX_REQUESTS):
        done = dataclasses.replace(
            RequestRecord.new(
                request_id=f"short-{i}-{uuid.uuid4().hex[:6]}",
                action="echo_async",
                user_id=user,
                tenant_id=tenant,
                connection_id=old_conn,
                payload={"message": str(i)},
            ),
            status=COMPLETED,
            created_at=now - 30 + i * 0.1,
            updated_at=now - 29 + i * 0.1,
            finished_at=now - 29 + i * 0.1,
            result={"message": str(i)},
        )
        await store.requests.create(done)

    call = Call(
        connection_id=new_conn,
        user_id=user,
        tenant_id=tenant,
        permissions=(),
        action="$resume",
        request_id="resume-1",
        payload={},
        metadata={},
    )
    actions = SystemActions(store=store)
    frames = await actions.resume(call)
    while frames and "resume_cursor" in frames[-1]:  # paged: the client follows the cursor
        frames += await actions.resume(
            dataclasses.replace(call, payload={"cursor": frames[-1]["resume_cursor"]})
        )
    resumed = {f["request_id"] for f in frames}
    assert running.client_request_id in resumed, (  # frames carry the client's own id
        f"$resume answered {len(frames)} frames (the newest finished ones) and dropped the one request "
        "still running"
    )
    subscribers = {s.connection_id for s in await store.subscriptions.for_request(running.request_id)}
    assert new_conn in subscribers, "the running request was not re-attached to the new connection"
