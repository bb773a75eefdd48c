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
"""

from __future__ import annotations

import argparse
import collections
import json
import re

from bench.child import emit, next_command, run_child, stdin_lines
from streamer.local.faultproxy import FaultProxy

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
    # here with no fault: it only counts.
    proxy = FaultProxy(args.upstream, on_call=count)
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
    args = p.parse_args()
    run_child(lambda: main(args), max_seconds=args.max_seconds)


if __name__ == "__main__":
    cli()
