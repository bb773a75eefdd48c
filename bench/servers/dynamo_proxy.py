"""A counting HTTP proxy in front of DynamoDB Local: how many calls of each kind a stack makes.

Every DynamoDB and DynamoDB Streams call is an HTTP POST whose ``X-Amz-Target`` names
the operation (``DynamoDB_20120810.UpdateItem``). The proxy forwards each call
unchanged and counts it by operation (batch and transaction writes also by item), so
the harness can measure — not estimate — the writes Streamer spends per request.
It is :class:`streamer.local.faultproxy.FaultProxy` (the tests' fault proxy) with a
counting hook: faults such as added latency are that class's options.
It adds latency, so it is used only in a separate counting run, never in a timed one.

``python -m bench.servers.dynamo_proxy --upstream URL``: ``ready`` with the port; the
command ``counts`` answers ``{"event": "counts", "calls": {...}, "items": {...}}``.

AWS-shaped latency (the ``aws`` scenario): ``--delay 0.004`` forwards every call that
much later (an in-region round trip, which DynamoDB Local on loopback does not have),
and ``--poll-floor 0.2`` keeps ``GetRecords`` calls at least that far apart (DynamoDB
Streams allows about 5 per second per shard; the benchmark's stacks read one shard),
so a request that waits for the stream waits as it would on AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import time

from aiohttp import web

from bench.child import emit, next_command, run_child, stdin_lines
from streamer.local.faultproxy import Fault, FaultProxy

_SET = re.compile(r"(#?\w+)\s*=")


def describe(op: str, body: bytes) -> str:
    """``UpdateItem requests SET #status,owner`` — which table, and what an update sets."""
    try:
        doc = json.loads(body)
    except ValueError:
        return op
    table = str(doc.get("TableName", "")).rsplit("-", 1)[-1]
    detail = f"{op} {table}".strip()
    expr = doc.get("UpdateExpression")
    if op == "UpdateItem" and isinstance(expr, str):
        names = doc.get("ExpressionAttributeNames") or {}
        fields = [names.get(n, n) for n in _SET.findall(expr.split(" REMOVE ")[0])]
        detail += " SET " + ",".join(sorted(set(fields))[:6])
    return detail


class AwsShapedProxy(FaultProxy):
    """The fault proxy with a floor between ``GetRecords`` calls (see the module docstring)."""

    def __init__(self, upstream: str, *, poll_floor: float = 0.0, **kw: object) -> None:
        super().__init__(upstream, **kw)  # type: ignore[arg-type]
        self.poll_floor = poll_floor
        self._next_read = 0.0

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self.poll_floor > 0 and request.headers.get("X-Amz-Target", "").endswith(".GetRecords"):
            now = time.monotonic()
            start = max(now, self._next_read)
            self._next_read = start + self.poll_floor
            if start > now:
                await asyncio.sleep(start - now)
        return await super()._forward(request)


async def main(args: argparse.Namespace) -> None:
    commands = await stdin_lines()
    calls: collections.Counter[str] = collections.Counter()
    items: collections.Counter[str] = collections.Counter()
    details: collections.Counter[str] = collections.Counter()

    def count(op: str, body: bytes) -> None:
        calls[op] += 1
        if op in ("PutItem", "UpdateItem", "DeleteItem", "Query", "GetItem"):
            details[describe(op, body)] += 1
        if op in ("BatchWriteItem", "TransactWriteItems"):
            try:
                doc = json.loads(body)
                if op == "BatchWriteItem":
                    items[op] += sum(len(v) for v in doc.get("RequestItems", {}).values())
                else:
                    items[op] += len(doc.get("TransactItems", []))
            except ValueError:
                pass

    # The one DynamoDB proxy of the repository (the tests' and chaos runs' fault proxy),
    # here with no fault but, when asked, AWS-shaped latency.
    faults = [Fault(kind="latency", rate=1.0, latency=args.delay)] if args.delay > 0 else []
    proxy = AwsShapedProxy(args.upstream, on_call=count, faults=faults, poll_floor=args.poll_floor)
    await proxy.start()
    emit("ready", port=proxy.port)
    try:
        while True:
            cmd = await next_command(commands, timeout=args.max_seconds)
            if cmd.get("cmd") == "counts":
                emit("counts", calls=dict(calls), items=dict(items), details=dict(details))
            else:
                break
    finally:
        await proxy.stop()


def cli() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--max-seconds", type=float, default=900.0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds added to every call (e.g. 0.004)")
    p.add_argument(
        "--poll-floor", type=float, default=0.0, help="least seconds between GetRecords calls (e.g. 0.2)"
    )
    args = p.parse_args()
    run_child(lambda: main(args), max_seconds=args.max_seconds)


if __name__ == "__main__":
    cli()
