"""(3) Async ``echo_async`` at 10/100 in flight, raw DynamoDB writes, writes per request;
(5) the same job on python-socketio + Celery + Redis, measured alternately with it.

In flight = sockets, each with one request outstanding (closed loop through
acknowledgment → first progress → complete). The example handler runs without pauses
(``STREAMER_EXAMPLES_STEP_SECONDS=0``), so what is measured is Streamer's own path:
connect → router → DynamoDB put → stream → processor claim → handler → progress and
result persisted → pushed back through connect.

Raw DynamoDB Local conditional-write throughput comes from one client process with
aiobotocore (``streamer.store.dynamo.open_client``), 32 puts in flight with
``attribute_not_exists``; the same load with aiodynamo and with our lean client
(``streamer.store.lean``, the services' default) gives the DynamoDB-client rows.

Writes per request are *counted*, not estimated: a separate small stack talks to
DynamoDB Local through :mod:`bench.servers.dynamo_proxy`, which counts every call by
operation; the idle rate (stream polling, lease renewals) measured just before is
subtracted, and what is left is divided by the requests sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.context import Context
from bench.load import errors, merged, run_load, split, start_workers
from bench.procs import Child, stop_all
from bench.report import Row, Target
from bench.stats import Series, percentile

WRITE_OPS = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
READ_OPS = ("GetItem", "Query", "Scan", "BatchGetItem", "GetRecords", "GetShardIterator", "DescribeStream")


async def measure(
    ctx: Context,
    *,
    kind: str,
    url: str,
    in_flight: int,
    label: str,
    duration: float | None = None,
    started: asyncio.Event | None = None,
) -> dict[str, Any]:
    """One closed-loop async load: latency percentiles and completed/s."""
    s = ctx.sizes
    duration = duration if duration is not None else s.async_seconds
    common = {"warmup": s.async_warmup_seconds, "duration": duration, "reply_timeout": 30.0}
    if kind == "sio":
        specs = [
            ctx.worker_spec(url=url, count=n, **common) for n in split(in_flight, s.client_procs(in_flight))
        ]
    else:
        specs = [
            ctx.worker_spec(
                urls=[url],
                count=n,
                action="echo_async",
                user_prefix=f"a{label}",
                tenant=f"async-{ctx.tag}",
                **common,
            )
            for n in split(in_flight, s.client_procs(in_flight))
        ]
    reports = await run_load(
        kind, specs, label=label, timeout=s.async_warmup_seconds + duration + 60, started=started
    )
    out: dict[str, Any] = {"rps": sum(int(r["completed"]) for r in reports) / duration}
    for key in ("ack", "first", "complete"):
        values = merged(reports, key)
        out[f"{key}_p50"] = percentile(values, 50)
        out[f"{key}_p99"] = percentile(values, 99)
    out["errors"], out["error_samples"] = errors(reports)
    return out


async def raw_dynamo(ctx: Context, *, run: int, client: str = "aiobotocore") -> tuple[float, float | None]:
    """Conditional puts/s from one process with ``client``, and that process's CPU ms per call."""
    s = ctx.sizes
    spec = ctx.worker_spec(
        endpoint=ctx.dynamodb.endpoint,
        table=f"b{ctx.tag}-raw",
        duration=s.dynamo_seconds,
        concurrency=s.dynamo_concurrency,
        client=client,
    )
    reports = await run_load("dynamo", [spec], label=f"dynamo-{client}-{run}", timeout=s.dynamo_seconds + 30)
    count, samples = errors(reports)
    if count:
        ctx.notes.append(f"raw DynamoDB ({client}) run {run}: {count} errors {samples}")
    cpu = reports[0].get("cpu_ms_per_call") if reports else None
    return sum(int(r["completed"]) for r in reports) / s.dynamo_seconds, cpu


async def _counts(proxy: Child) -> dict[str, int]:
    """Calls so far by operation, plus ``detail:``-prefixed keys by table and update."""
    await proxy.send("counts")
    msg = await proxy.expect("counts", timeout=10)
    counts = {k: int(v) for k, v in msg["calls"].items()}
    counts.update({f"detail:{k}": int(v) for k, v in msg.get("details", {}).items()})
    return counts


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


async def count_writes(ctx: Context) -> dict[str, Any]:
    """DynamoDB calls per request, by operation, for echo (sync) and echo_async."""
    s = ctx.sizes
    proxy = await Child.start(
        name="dynamo-proxy", module="bench.servers.dynamo_proxy", args=["--upstream", ctx.dynamodb.endpoint]
    )
    stack: Any = None
    result: dict[str, Any] = {
        "method": "counted by a proxy on the DynamoDB endpoint (bench/servers/dynamo_proxy.py)"
    }
    try:
        port = (await proxy.expect("ready", timeout=30))["port"]
        stack = await ctx.start_stack(name="count", dynamodb_endpoint=f"http://127.0.0.1:{port}")
        loop = asyncio.get_running_loop()
        # sync on one socket; async at the lowest timed level, so that the stream
        # checkpoints are shared between requests as in the timed run
        for action, kind, sockets in (("echo", "sync", 1), ("echo_async", "async", min(s.async_levels))):
            spec = ctx.worker_spec(
                urls=[stack.ws_url],
                count=sockets,
                action=action,
                warmup=0.0,
                duration=60.0,
                max_requests=s.count_requests,
                user_prefix=f"count-{action}",
                tenant=f"count-{ctx.tag}",
            )
            children = await start_workers(kind, [spec], label=f"count-{action}")
            try:
                await asyncio.sleep(1.0)  # the connection's own writes settle
                c0, t0 = await _counts(proxy), loop.time()
                await asyncio.sleep(2.0)
                c1, t1 = await _counts(proxy), loop.time()
                idle_rate = {k: v / (t1 - t0) for k, v in _diff(c1, c0).items()}
                await children[0].send("go")
                report = await children[0].expect("done", timeout=120)
                await asyncio.sleep(1.0)  # trailing writes (last progress, completion)
                c2, t2 = await _counts(proxy), loop.time()
            finally:
                await stop_all(children)
            sent = int(report["completed"]) + int(report.get("errors", 0))
            result.setdefault("in_flight", {})[action] = sockets
            calls = _diff(c2, c1)
            every = {
                op: max(0.0, round((n - idle_rate.get(op, 0.0) * (t2 - t1)) / max(1, sent), 2))
                for op, n in sorted(calls.items())
                if n
            }
            per_request = {k: v for k, v in every.items() if not k.startswith("detail:")}
            detail = {k[len("detail:") :]: v for k, v in every.items() if k.startswith("detail:") and v}
            result[action] = {
                "requests": sent,
                "errors": int(report.get("errors", 0)),
                "per_request": per_request,
                "by_table_and_update": detail,
                "writes_per_request": round(sum(per_request.get(op, 0.0) for op in WRITE_OPS), 2),
                "reads_per_request": round(sum(per_request.get(op, 0.0) for op in READ_OPS), 2),
                "idle_calls_per_second": {
                    k: round(v, 2) for k, v in idle_rate.items() if v and not k.startswith("detail:")
                },
            }
    finally:
        if stack is not None:
            await ctx.stop_stack(stack)
        await proxy.stop()
    return result


async def run(ctx: Context, *, streamer_url: str, peer_url: str | None) -> list[Row]:
    s = ctx.sizes
    series: dict[tuple[str, int, str], Series] = {}
    raw = Series()
    clients: dict[tuple[str, str], Series] = {}
    for r in range(s.runs):
        for level in s.async_levels:
            systems = [("streamer", "async", streamer_url)]
            if peer_url:
                systems.append(("peer", "sio", peer_url))
            for system, kind, url in systems:
                result = await measure(
                    ctx, kind=kind, url=url, in_flight=level, label=f"async-{system}-{level}-{r}"
                )
                if result["errors"]:
                    ctx.notes.append(
                        f"async {system} {level} in flight run {r}: "
                        f"{result['errors']} errors {result['error_samples']}"
                    )
                for key, value in result.items():
                    if isinstance(value, float):
                        series.setdefault((system, level, key), Series()).add(value)
        for client in ("aiobotocore", "aiodynamo", "lean"):
            rate, cpu = await raw_dynamo(ctx, run=r, client=client)
            if client == "aiobotocore":
                raw.add(rate)
            clients.setdefault((client, "rate"), Series()).add(rate)
            if cpu is not None:
                clients.setdefault((client, "cpu"), Series()).add(cpu)
    writes = await count_writes(ctx)
    ctx.extra["dynamodb_calls_per_request"] = writes
    ctx.extra["raw_conditional_writes_per_second"] = raw.as_dict()
    wpr = float(writes["echo_async"]["writes_per_request"])
    rows: list[Row] = []
    for level in s.async_levels:
        case = f"{level} in flight"
        for key, metric, target in (
            ("ack_p50", "→ack p50", None),
            ("ack_p99", "→ack p99", None),
            ("first_p50", "→first progress p50", None),
            ("first_p99", "→first progress p99", Target("abs_max", 50.0) if level == 10 else None),
            ("complete_p50", "→complete p50", None),
            ("complete_p99", "→complete p99", Target("abs_max", 100.0) if level == 10 else None),
        ):
            rows.append(
                Row(
                    scenario="3 async echo",
                    case=case,
                    metric=metric,
                    unit="ms",
                    streamer=series[("streamer", level, key)],
                    target=target,
                )
            )
        rows.append(
            Row(
                scenario="3 async echo",
                case=case,
                metric="completed",
                unit="req/s",
                streamer=series[("streamer", level, "rps")],
            )
        )
        spent = Series([v * wpr for v in series[("streamer", level, "rps")].values])
        rows.append(
            Row(
                scenario="3 async echo",
                case=case,
                metric=f"DynamoDB writes/s (completed \u00d7 {wpr:g} writes/req)",
                unit="writes/s",
                streamer=spent,
                baseline=raw,
                baseline_name="raw cond. put_item",
                target=Target("ratio_min", 0.5),
            )
        )
    # The DynamoDB client candidates, measured the same way (#12: our own client only if it
    # clearly beats the library): aiodynamo and ours (streamer.store.lean) against aiobotocore,
    # and ours against aiodynamo.
    for candidate, base, base_name in (
        ("aiodynamo", "aiobotocore", "aiobotocore"),
        ("lean", "aiobotocore", "aiobotocore"),
        ("lean", "aiodynamo", "aiodynamo (the library)"),
    ):
        for key, metric, unit in (
            ("cpu", "client CPU per cond. put_item", "ms"),
            ("rate", "cond. put_item", "req/s"),
        ):
            if (candidate, key) in clients and (base, key) in clients:
                rows.append(
                    Row(
                        scenario="3 async echo",
                        case=f"DynamoDB client: {candidate}, {s.dynamo_concurrency} in flight",
                        metric=metric,
                        unit=unit,
                        streamer=clients[(candidate, key)],
                        baseline=clients[(base, key)],
                        baseline_name=base_name,
                    )
                )
    if peer_url:
        for level in s.async_levels:
            case = f"{level} in flight"
            for key, metric, unit, target in (
                ("first_p50", "→first progress p50", "ms", Target("ratio_max", 1.0)),
                ("first_p99", "→first progress p99", "ms", Target("ratio_max", 1.0)),
                ("complete_p50", "→complete p50", "ms", None),
                ("complete_p99", "→complete p99", "ms", None),
                ("rps", "completed", "req/s", Target("ratio_min", 1.0)),
            ):
                rows.append(
                    Row(
                        scenario="5 peer",
                        case=case,
                        metric=metric,
                        unit=unit,
                        streamer=series[("streamer", level, key)],
                        baseline=series[("peer", level, key)],
                        baseline_name="socketio+Celery+Redis",
                        target=target,
                    )
                )
    return rows


async def start_peer(ctx: Context, *, redis_binary: str) -> tuple[str, list[Any]]:
    """Redis, the Socket.IO server and the Celery worker; returns the URL and what to stop."""
    from bench.servers.redis import RedisServer

    redis = await RedisServer(binary=redis_binary).start()
    env = {"BENCH_REDIS_URL": redis.url}
    worker = await Child.start(name="peer-celery", module="bench.peer.worker", env=env)
    server = await Child.start(name="peer-sio", module="bench.peer.server", env=env)
    try:
        port = (await server.expect("ready", timeout=60))["port"]
        await worker.expect("ready", timeout=60)
    except BaseException:
        await stop_all([server, worker])
        redis.stop()
        raise
    return f"http://127.0.0.1:{port}", [server, worker, redis]


async def stop_peer(parts: list[Any]) -> None:
    for part in parts:
        if isinstance(part, Child):
            await part.stop()
        else:
            part.stop()


#: AWS-shaped latency for scenario 6: an in-region DynamoDB call, DynamoDB Streams' read pace.
AWS_DELAY_SECONDS = 0.004
AWS_POLL_FLOOR_SECONDS = 0.2


async def aws_shaped(ctx: Context) -> list[Row]:
    """(6) ``echo_async`` with and without direct dispatch, behind AWS-shaped latency.

    Each stack gets its own counting proxy with a 4 ms delay on every DynamoDB call and
    at least 200 ms between GetRecords calls (:mod:`bench.servers.dynamo_proxy`), so a
    request that waits for the stream waits as it would on AWS. "direct" is the normal
    stack (the router offers each request to a processor); "stream only" is the same
    stack with ``STREAMER_PROCESSOR_ADDRESSES`` empty (no offers: the pre-#12 path).
    """
    s = ctx.sizes
    level = min(s.async_levels)
    modes: tuple[tuple[str, dict[str, str]], ...] = (
        ("direct", {}),
        ("stream", {"STREAMER_PROCESSOR_ADDRESSES": ""}),
    )
    proxies: list[Child] = []
    stacks: dict[str, Any] = {}
    series: dict[tuple[str, str], Series] = {}
    try:
        for mode, env in modes:
            proxy = await Child.start(
                name=f"dynamo-proxy-aws-{mode}",
                module="bench.servers.dynamo_proxy",
                args=[
                    "--upstream",
                    ctx.dynamodb.endpoint,
                    "--delay",
                    str(AWS_DELAY_SECONDS),
                    "--poll-floor",
                    str(AWS_POLL_FLOOR_SECONDS),
                ],
            )
            proxies.append(proxy)
            port = (await proxy.expect("ready", timeout=30))["port"]
            stacks[mode] = await ctx.start_stack(
                name=f"aws{mode}", dynamodb_endpoint=f"http://127.0.0.1:{port}", env=env
            )
        for r in range(s.runs):
            for mode, _ in modes:
                result = await measure(
                    ctx,
                    kind="async",
                    url=stacks[mode].ws_url,
                    in_flight=level,
                    label=f"aws-{mode}-{level}-{r}",
                )
                if result["errors"]:
                    ctx.notes.append(
                        f"aws-shaped {mode} run {r}: {result['errors']} errors {result['error_samples']}"
                    )
                for key, value in result.items():
                    if isinstance(value, float):
                        series.setdefault((mode, key), Series()).add(value)
    finally:
        for stack in stacks.values():
            await ctx.stop_stack(stack)
        await stop_all(proxies)
    delay, floor = AWS_DELAY_SECONDS * 1000, AWS_POLL_FLOOR_SECONDS * 1000
    case = f"{level} in flight, {delay:g} ms/call, GetRecords ≥ {floor:g} ms apart"
    return [
        Row(
            scenario="6 AWS-shaped",
            case=case,
            metric=metric,
            unit=unit,
            streamer=series[("direct", key)],
            baseline=series[("stream", key)],
            baseline_name="Streamer, stream only (no Offer)",
        )
        for key, metric, unit in (
            ("first_p50", "→first progress p50", "ms"),
            ("first_p99", "→first progress p99", "ms"),
            ("complete_p99", "→complete p99", "ms"),
            ("rps", "completed", "req/s"),
        )
    ]
