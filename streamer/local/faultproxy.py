"""A DynamoDB fault proxy: what AWS DynamoDB does and DynamoDB Local never does.

Every DynamoDB and DynamoDB Streams call is an HTTP POST whose ``X-Amz-Target`` names
the operation (``DynamoDB_20120810.UpdateItem``). :class:`FaultProxy` sits between the
services and DynamoDB Local (point ``STREAMER_DYNAMODB_ENDPOINT`` at it), forwards each
call, and — per operation, per table and at a seeded rate — plays the failures the real
service has (see ``../shared/notes/dynamodb-real-vs-local.md``):

==============  ==========================================================================
kind            what the caller sees
==============  ==========================================================================
``throttle``    HTTP 400 ``ProvisionedThroughputExceededException`` (the SDK retries it)
``error``       HTTP 500 ``InternalServerError`` (the SDK retries it)
``latency``     the call is forwarded ``latency`` seconds late (combines with the others)
``ambiguous``   writes only: the write is applied upstream and, when it landed (200),
                the connection is cut before the answer — the SDK retries, and a conditional retry meets its
                own write (``ConditionalCheckFailedException``)
``stale``       eventually consistent reads only (``Query``/``Scan`` on an index or
                without ``ConsistentRead``; ``GetItem`` without it): the answer an earlier
                identical read got, up to ``stale`` seconds old (values that are numbers,
                such as a ``:now``, do not count in "identical", so a sweep that asks
                again a moment later sees the index as it was)
==============  ==========================================================================

When the upstream is unreachable the connection is cut too, as a dead endpoint would.
Faults can be changed while it runs (:meth:`FaultProxy.set_faults`, or ``PUT /_proxy/faults``
with a JSON list), and :attr:`FaultProxy.counts` says what happened to how many calls
(``GET /_proxy/stats``). ``on_call(op, body)`` sees every call (the benchmark counts them).

``python -m streamer.local.faultproxy --upstream URL [--fault SPEC ...] [--seed N]`` runs
one on its own and prints ``{"event": "ready", "port": P}``; a SPEC reads
``throttle:rate=0.1,ops=UpdateItem+PutItem,tables=requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["KINDS", "WRITE_OPS", "Fault", "FaultProxy", "parse_fault"]

KINDS = ("throttle", "error", "latency", "ambiguous", "stale")
WRITE_OPS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
_READ_OPS = frozenset({"Query", "Scan", "GetItem"})
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
_JSON = "application/x-amz-json-1.0"
_ERRORS = {
    "throttle": (
        400,
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API.",
    ),
    "error": (500, "com.amazon.coral.service#InternalServerError", "Internal server error"),
}
#: Most stale snapshots kept (one per distinct read); the oldest go first.
_MAX_SNAPSHOTS = 20_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fault:
    """One fault: ``kind`` on a ``rate`` share of the calls it matches.

    ``ops`` (operation names) and ``tables`` (a table name or its suffix after the
    last ``-``, e.g. ``requests``) narrow it; empty means every call. ``latency`` and
    ``stale`` are in seconds.
    """

    kind: str
    rate: float = 1.0
    ops: frozenset[str] = frozenset()
    tables: frozenset[str] = frozenset()
    latency: float = 0.0
    stale: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, not {self.kind!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")

    def matches(self, op: str, table: str) -> bool:
        if self.ops and op not in self.ops:
            return False
        if self.tables and table not in self.tables and table.rsplit("-", 1)[-1] not in self.tables:
            return False
        if self.kind == "ambiguous":
            return op in WRITE_OPS
        return True

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ops"], out["tables"] = sorted(self.ops), sorted(self.tables)
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Fault:
        return cls(
            kind=str(doc["kind"]),
            rate=float(doc.get("rate", 1.0)),
            ops=frozenset(doc.get("ops") or ()),
            tables=frozenset(doc.get("tables") or ()),
            latency=float(doc.get("latency", 0.0)),
            stale=float(doc.get("stale", 0.0)),
        )


def parse_fault(spec: str) -> Fault:
    """``kind[:key=value,...]`` → :class:`Fault` (lists in ``ops``/``tables`` joined by ``+``)."""
    kind, _, rest = spec.partition(":")
    doc: dict[str, Any] = {"kind": kind.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, _, value = part.partition("=")
        doc[key.strip()] = value.split("+") if key.strip() in ("ops", "tables") else value
    return Fault.from_json(doc)


def _stale_eligible(op: str, doc: Mapping[str, Any]) -> bool:
    if op not in _READ_OPS:
        return False
    if op != "GetItem" and doc.get("IndexName"):
        return True  # a GSI read is eventually consistent whatever is asked
    return not doc.get("ConsistentRead")


def _read_key(doc: Mapping[str, Any]) -> str:
    """What makes two reads "the same": the document minus values that are numbers."""
    values = {
        k: v
        for k, v in (doc.get("ExpressionAttributeValues") or {}).items()
        if not (isinstance(v, dict) and "N" in v)
    }
    return json.dumps({**doc, "ExpressionAttributeValues": values}, sort_keys=True)


@dataclasses.dataclass
class _Snapshot:
    at: float
    status: int
    body: bytes
    headers: dict[str, str]


class FaultProxy:
    """The proxy (see the module docstring). ``await start()``, use :attr:`endpoint`, ``await stop()``."""

    def __init__(
        self,
        upstream: str,
        *,
        faults: Iterable[Fault] = (),
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        on_call: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = list(faults)
        self.rng = random.Random(seed)
        self.host = host
        self.port = port
        self.on_call = on_call
        #: ``(op, outcome)`` → calls; outcome is ``forwarded`` or a fault kind (``unreachable``).
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._snapshots: collections.OrderedDict[str, _Snapshot] = collections.OrderedDict()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_faults(self, faults: Iterable[Fault]) -> None:
        self.faults = list(faults)

    def injected(self, kind: str | None = None) -> int:
        """Calls that got a fault (of ``kind``), all operations together."""
        return sum(
            n for (_, outcome), n in self.counts.items() if outcome != "forwarded" and kind in (None, outcome)
        )

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=60),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/_proxy/stats", self._stats)
        app.router.add_put("/_proxy/faults", self._put_faults)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ admin
    async def _stats(self, request: web.Request) -> web.Response:
        counts: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for (op, outcome), n in self.counts.items():
            counts[op][outcome] = n
        return web.json_response({"faults": [f.to_json() for f in self.faults], "counts": counts})

    async def _put_faults(self, request: web.Request) -> web.Response:
        try:
            self.set_faults(Fault.from_json(doc) for doc in await request.json())
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"faults": [f.to_json() for f in self.faults]})

    # ------------------------------------------------------------------ calls
    def _drawn(self, op: str, table: str) -> list[Fault]:
        """The faults that strike this call (each matching one drawn at its rate)."""
        return [f for f in self.faults if f.matches(op, table) and self.rng.random() < f.rate]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        op = request.headers.get("X-Amz-Target", "?").rsplit(".", 1)[-1]
        if self.on_call is not None:
            self.on_call(op, body)
        doc: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            parsed = json.loads(body) if body else {}
            doc = parsed if isinstance(parsed, dict) else {}
        table = str(doc.get("TableName", ""))
        struck = self._drawn(op, table) if self.faults else []
        delay = sum(f.latency for f in struck if f.kind == "latency")
        if delay > 0:
            await asyncio.sleep(delay)
        kinds = {f.kind for f in struck}
        for kind in ("throttle", "error"):
            if kind in kinds:
                self.counts[(op, kind)] += 1
                return _error_response(kind)
        stale = max((f.stale for f in struck if f.kind == "stale"), default=0.0)
        key = _read_key(doc) if stale > 0 and _stale_eligible(op, doc) else None
        if key is not None:
            snap = self._snapshots.get(key)
            if snap is not None and time.monotonic() - snap.at <= stale:
                self.counts[(op, "stale")] += 1
                return web.Response(status=snap.status, body=snap.body, headers=snap.headers)
        try:
            status, payload, headers = await self._upstream(request, body)
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.counts[(op, "unreachable")] += 1
            return self._cut(request)
        if key is not None:
            self._remember(key, _Snapshot(time.monotonic(), status, payload, headers))
        if "ambiguous" in kinds and status == 200:  # it landed: lose the answer
            self.counts[(op, "ambiguous")] += 1
            return self._cut(request)
        self.counts[(op, "latency" if delay > 0 else "forwarded")] += 1
        return web.Response(status=status, body=payload, headers=headers)

    async def _upstream(self, request: web.Request, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        assert self._session is not None, "start() the proxy first"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return upstream.status, payload, out

    def _remember(self, key: str, snap: _Snapshot) -> None:
        old = self._snapshots.get(key)
        if old is not None and snap.at - old.at <= 0:
            return
        self._snapshots[key] = snap
        self._snapshots.move_to_end(key)
        while len(self._snapshots) > _MAX_SNAPSHOTS:
            self._snapshots.popitem(last=False)

    @staticmethod
    def _cut(request: web.Request) -> web.Response:
        """Drop the connection without an answer (the caller sees a reset, as on a lost reply)."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=599)


def _error_response(kind: str) -> web.Response:
    status, type_, message = _ERRORS[kind]
    return web.Response(
        status=status,
        body=json.dumps({"__type": type_, "message": message}).encode(),
        headers={"Content-Type": _JSON, "x-amzn-RequestId": uuid.uuid4().hex.upper()},
    )


async def _main(args: argparse.Namespace) -> None:
    proxy = FaultProxy(
        args.upstream, faults=[parse_fault(s) for s in args.fault], seed=args.seed, port=args.port
    )
    await proxy.start()
    print(json.dumps({"event": "ready", "port": proxy.port}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.stop()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m streamer.local.faultproxy", description=__doc__.split("\n")[0]
    )
    p.add_argument("--upstream", required=True, help="DynamoDB Local's URL")
    p.add_argument(
        "--fault", action="append", default=[], help="kind[:rate=R,ops=A+B,tables=T,latency=S,stale=S]"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
