"""The chaos run: nothing accepted is lost or done twice while processes keep dying.

``test_chaos_short`` (in ``make test``): ~50 requests, one SIGKILL of each kind
(processor, handler, connect, router; two at a time) and a 3 s DynamoDB outage, on a
stack the module shares with the regression tests of bugs the chaos run found.
``test_chaos_long`` (``make chaos``): 1,000 requests with 100 in flight, four rounds of
kills and a 10 s DynamoDB outage; it writes its figures to docs/reliability.md.

DynamoDB as AWS runs it and clocks that disagree: ``test_chaos_dynamodb_short`` (in
``make test``) runs requests through the fault proxy (throttling, 500s, latency, lost
answers to landed writes, stale index reads) with one processor's clock 5 s ahead;
``test_chaos_faults_long`` is the long run plus those faults, ``test_chaos_skew_long``
kills processors while one runs 5 s behind (both in ``make chaos``, with figures).
See :mod:`chaoslib` for what is measured and how.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import pathlib
import platform
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chaoslib import (
    DYNAMODB_FAULTS,
    KINDS,
    SKEW_ENV,
    ChaosConfig,
    Figures,
    run_chaos,
    start_chaos_stack,
    write_section,
)

from examples.handlers import handlers
from streamer import rpc
from streamer.api.v1 import handler_pb2, handler_pb2_grpc
from streamer.client import StreamerClient
from streamer.local.dynamodb import DynamoDBLocal
from streamer.local.stack import LocalStack, StackError
from streamer.sdk import HandlerServer
from streamer.store import COMPLETED, Store, request_key

Shared = tuple[DynamoDBLocal, LocalStack, pathlib.Path]


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    """DynamoDB Local on disk (so it can be stopped and started) and a stack: 2 processors, 1 connect."""
    run_dir = tmp_path_factory.mktemp("chaos")
    dynamodb, stack = await start_chaos_stack(run_dir=run_dir, processors=2, connects=1)
    try:
        yield dynamodb, stack, run_dir
    finally:
        await stack.stop()
        await asyncio.to_thread(dynamodb.stop)


def report(figures: Figures, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n\nchaos run ({figures.mode}):\n{figures.table()}\n")
        for line in figures.problems[:20]:
            print("  problem:", line.replace("\n", "\n    "))


def check(figures: Figures, config: ChaosConfig) -> None:
    detail = "\n".join(figures.problems[:20])
    assert figures.duplicates == 0, detail
    assert figures.lost == 0, detail
    assert figures.cancelled == 0, detail
    assert figures.accepted == figures.completed + figures.failed, detail
    assert figures.refused == 0, detail  # every request was accepted in the end (resubmitted)
    assert not [p for p in figures.problems if "wrong result" in p or "client got" in p], detail
    assert figures.kills_survived == len(KINDS) * config.kill_rounds
    assert figures.progress_frames > 0
    assert figures.secrets_in_logs == 0, detail
    assert figures.concurrent_runs == 0, detail
    assert max(figures.handler_runs, default=0) <= figures.runs_allowed, figures.handler_runs
    # Most requests complete; the rest FAILED with a reason (retries exhausted while a
    # handler was down), never silently.
    assert figures.completed >= figures.accepted * 0.8, figures.failure_reasons
    assert all(reason.split(":")[0] != "?" for reason in figures.failure_reasons), figures.failure_reasons


async def _stored(stack: LocalStack, request_id: str, tenant: str = "t-brk") -> Any:
    async with Store.open(settings=stack.settings) as store:
        return await store.requests.get(request_key(tenant, request_id))


async def test_results_reach_clients_that_resumed_on_a_restarted_connect(shared: Shared) -> None:
    stack = shared[1]
    """Regression (found by the chaos run): clients lost their results.

    While a connect pod is down, the processor's sends to it fail, and after three
    failures in a row the delivery layer's per-endpoint circuit breaker opens for 30 s.
    The pod comes back at the same address (a container restart keeps the pod IP),
    the clients reconnect to it and ``$resume`` re-attaches their requests. When the
    requests complete, the ``complete`` frames are refused by the still-open breaker
    and never sent again: clients that did everything right never hear their results.
    """
    clients = 4
    ids = [f"brk-{i}-{uuid.uuid4().hex[:8]}" for i in range(clients)]
    completes: dict[str, int] = dict.fromkeys(ids, 0)

    def record(msg: dict[str, Any]) -> None:
        rid = msg.get("request_id")
        if rid in completes and (
            msg.get("type") == "complete" or (msg.get("type") == "status" and msg.get("status") == COMPLETED)
        ):
            completes[rid] += 1

    async with contextlib.AsyncExitStack() as exits:
        sdk = [
            await exits.enter_async_context(
                StreamerClient(
                    stack.ws_url,
                    token=stack.token(user=f"u-brk-{i}", tenant="t-brk"),
                    reconnect_delay=0.05,
                    on_message=record,
                )
            )
            for i in range(clients)
        ]
        started = [asyncio.Event() for _ in range(clients)]
        handles = [
            await client.start(
                "delay",
                {"seconds": 12, "steps": 60},
                request_id=rid,
                on_progress=lambda p, ev=ev: ev.set(),  # type: ignore[misc]
            )
            for client, rid, ev in zip(sdk, ids, started, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), timeout=30)
        await stack.kill("connect")
        await asyncio.sleep(1.0)  # progress keeps being sent to the dead pod: the breaker opens
        await stack.restart("connect", kill_first=False)
        for _ in range(300):  # the clients reconnect and resume on their own
            if all(c.connected and c.reconnects for c in sdk):
                break
            await asyncio.sleep(0.05)
        assert all(c.reconnects >= 1 for c in sdk)
        for rid in ids:
            for _ in range(600):  # at most 60 s for the request to end
                stored = await _stored(stack, rid)
                if stored is not None and stored.terminal:
                    break
                await asyncio.sleep(0.1)
            assert stored is not None and stored.status == COMPLETED, stored
        # The outcome is pushed: no $status, no new reconnect. 10 s is far more than one
        # delivery takes, and far less than the 30 s the breaker stays open.
        results = await asyncio.gather(*(h.result(timeout=10) for h in handles), return_exceptions=True)
        missing = [rid for rid, r in zip(ids, results, strict=True) if isinstance(r, BaseException)]
        assert not missing, f"{len(missing)} of {clients} resumed clients never got their result"
        assert all(n >= 1 for n in completes.values()), completes


async def test_services_restart_while_this_process_uses_grpc(shared: Shared) -> None:
    """Regression: a restart crashed the new child when the launcher itself was using gRPC.

    ``LocalStack._spawn`` passes ``preexec_fn`` (for ``PR_SET_PDEATHSIG``), so Python forks
    and runs code in the child before ``exec``; gRPC's fork handlers in a process whose gRPC
    threads are busy then leave the child to die with SIGSEGV/SIGABRT ("epoll_wait error:
    Bad file descriptor") before it ever runs. Tests, the chaos driver and benchmarks all
    use gRPC in the launcher (``LocalStack.wait_ready`` itself does).
    """
    stack = shared[1]
    server = HandlerServer(actions=handlers(), name="busy")
    port = await server.start(host="127.0.0.1", port=0)
    stop = asyncio.Event()

    async def busy() -> None:
        async with rpc.channel(f"127.0.0.1:{port}") as channel:
            stub = handler_pb2_grpc.HandlerStub(channel)
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    await stub.Describe(handler_pb2.DescribeRequest(), timeout=5)

    callers = [asyncio.create_task(busy()) for _ in range(4)]
    failures: list[str] = []
    try:
        for _ in range(3):
            try:
                await stack.restart("handler")
            except StackError as exc:
                failures.append(str(exc).splitlines()[0])
    finally:
        stop.set()
        await asyncio.gather(*callers, return_exceptions=True)
        await server.stop(grace=0.5)
        if not stack.service("handler").running:
            await stack.restart("handler", kill_first=False)  # leave the stack whole for the next test
    assert not failures, failures


@pytest.mark.timeout(150)
async def test_chaos_short(shared: Shared, capsys: pytest.CaptureFixture[str]) -> None:
    dynamodb, stack, run_dir = shared
    config = ChaosConfig(
        requests=50,
        in_flight=25,
        clients=6,
        tenants=2,
        submit_seconds=14.0,
        kill_rounds=1,
        kill_gap=(1.0, 2.0),
        down_time=(0.0, 0.5),
        outage_seconds=3.0,
        result_timeout=30.0,
        request_budget=70.0,
        drain_budget=60.0,
        seed=11,
        connects=1,
        parallel=2,
    )
    figures = await run_chaos(config, run_dir=run_dir, mode="short", stack=stack, dynamodb=dynamodb)
    report(figures, capsys)
    check(figures, config)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_chaos_long(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = ChaosConfig()
    figures = await run_chaos(config, run_dir=tmp_path, mode="long")
    report(figures, capsys)
    when = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_section(
        "chaos-figures",
        f"Latest `make chaos` run ({when}, {platform.machine()}, {config.requests} requests, "
        f"{config.in_flight} in flight, {config.clients} clients, {config.kill_rounds} rounds of kills, "
        f"DynamoDB down {config.outage_seconds:g} s once):\n\n{figures.table()}\n",
    )
    check(figures, config)


@pytest.mark.timeout(150)
async def test_chaos_dynamodb_short(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """AWS's failures through the fault proxy, and one processor's clock 5 s ahead."""
    config = ChaosConfig(
        requests=40,
        in_flight=20,
        clients=6,
        tenants=2,
        submit_seconds=12.0,
        kill_rounds=0,
        outage_seconds=0.0,
        result_timeout=45.0,
        request_budget=80.0,
        drain_budget=60.0,
        seed=18,
        connects=1,
        faults=DYNAMODB_FAULTS,
        skew_seconds=5.0,
        env=SKEW_ENV,
    )
    figures = await run_chaos(config, run_dir=tmp_path, mode="dynamodb-short")
    report(figures, capsys)
    check(figures, config)
    assert sum(figures.faults_injected.values()) > 0, figures.faults_injected


def _long_section(marker: str, title: str, config: ChaosConfig, figures: Figures) -> None:
    when = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_section(
        marker,
        f"{title} ({when}, {platform.machine()}, {config.requests} requests, {config.in_flight} in flight, "
        f"{config.clients} clients, {config.kill_rounds} rounds of kills):\n\n{figures.table()}\n",
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_chaos_faults_long(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The long run (kills and an outage) with DynamoDB failing as AWS's does, throughout."""
    config = ChaosConfig(faults=DYNAMODB_FAULTS, seed=1801)
    figures = await run_chaos(config, run_dir=tmp_path, mode="faults-long")
    report(figures, capsys)
    _long_section("chaos-faults-figures", "Latest `make chaos` DynamoDB-faults phase", config, figures)
    check(figures, config)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_chaos_skew_long(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One processor's clock 5 s behind while processes keep dying."""
    config = ChaosConfig(
        requests=500,
        submit_seconds=75.0,
        kill_rounds=2,
        outage_seconds=0.0,
        skew_seconds=-5.0,
        env=SKEW_ENV,
        seed=1802,
    )
    figures = await run_chaos(config, run_dir=tmp_path, mode="skew-long")
    report(figures, capsys)
    _long_section("chaos-skew-figures", "Latest `make chaos` clock-skew phase", config, figures)
    check(figures, config)
