"""The chaos harness: steady async load on the local stack while a driver kills things.

:func:`run_chaos` starts its own DynamoDB Local on a fixed port with a persistent
``-dbPath`` (so it can be stopped and started again without losing data), a
:class:`~streamer.local.stack.LocalStack` on it (two connects, two processors, the
router and the example handler, every one its own process), and then three things at
once:

- **load**: ``requests`` ``echo_async`` requests (progress 0/25/50/75/100), paced
  evenly over ``submit_seconds`` with at most ``in_flight`` outstanding, spread over
  ``clients`` SDK clients (:class:`~streamer.client.StreamerClient`, reconnect and
  ``$resume`` on). A request refused before it was accepted (router down, storage
  down) is sent again with the same id, which the protocol makes idempotent.
- **driver**: ``kill_rounds`` times, at a random moment, SIGKILLs a processor, the
  handler, a connect and the router (shuffled), waits a random moment, restarts it
  with the same ports and waits until it is ready. Once, between two kills, DynamoDB
  Local is stopped for ``outage_seconds`` and started again on the same port.
- **supervisor**: like a kubelet, restarts any service that exits on its own (and
  counts it: a service that dies of a dependency outage is worth knowing about).

Then it waits for every request to end and compares three views: what each client
received (every raw frame, through ``on_message``), what the SDK returned, and what
DynamoDB holds. The figures say how many were accepted, completed, failed (with the
reasons), duplicated (a request whose client saw two *different* completions, or a
result other than the stored one), lost (accepted but not terminal, or terminal but
its client never heard), and how many kills the stack survived.

Two more kinds of trouble, for the phases that need them:

- **DynamoDB as AWS runs it**: ``faults`` puts a
  :class:`~streamer.local.faultproxy.FaultProxy` between the stack and DynamoDB Local
  (throttling, 500s, latency, writes whose answer is lost, stale index reads);
- **clock skew**: ``skew_seconds`` restarts the second processor with its wall clock
  that far off (``tests/chaos/skew/sitecustomize.py``).

The handler is the examples handler with every run written down
(``tests/chaos/chaos_handler.py``), so the figures also say how many times the handler
ran per request and whether two runs of one request ever overlapped.

Everything is bounded: the number of requests, kills and resubmissions, and every
wait has a deadline. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import random
import re
import time
import uuid
from typing import Any

from streamer.client import StreamerClient
from streamer.client.errors import StreamerError
from streamer.local.dynamodb import DynamoDBLocal
from streamer.local.faultproxy import FaultProxy, parse_fault
from streamer.local.stack import LocalStack, StackError
from streamer.store import COMPLETED, FAILED, TERMINAL, Store, request_key

log = logging.getLogger("chaos")

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
RUNS_FILE = "handler-runs.jsonl"
RELIABILITY_DOC = REPO / "docs" / "reliability.md"
ACTION = "echo_async"

#: Intervals short enough that recovery (claim expiry, sweeps, lease takeover) happens
#: within seconds; the examples' progress steps long enough that kills land mid-request.
CHAOS_ENV: dict[str, str] = {
    "STREAMER_SWEEP_INTERVAL_SECONDS": "1",
    # 8 s, not 4: on a loaded machine (load 12-21, DynamoDB calls taking seconds) 4 s
    # claims ran out before their renewal answered, and 81 of 1,000 requests ended
    # FAILED "recovered more than 3 times" (docs/reliability.md); a renewal every 2.7 s
    # may now take ~5 s. Recovery after a processor kill takes 4 s longer.
    "STREAMER_CLAIM_SECONDS": "8",
    "STREAMER_LEASE_SECONDS": "4",
    "STREAMER_PENDING_GRACE_SECONDS": "3",
    "STREAMER_PROGRESS_INTERVAL_SECONDS": "0.1",
    "STREAMER_EXAMPLES_STEP_SECONDS": "0.25",
    "STREAMER_WS_RATE_LIMIT": "0",
    "STREAMER_DRAIN_SECONDS": "2",
    "STREAMER_LOG_LEVEL": "INFO",
    # A killed handler is back within seconds; retries must span that (2 s, 4 s, 8 s, 16 s
    # with maxAttempts 5 below), as a deployment's retry policy would span a pod restart.
    "STREAMER_RETRY_BASE_SECONDS": "2",
}
#: The chaos run's handler keeps the default schema; only its retry budget is larger.
MAX_ATTEMPTS = 5
ACTION_OVERRIDES: dict[str, dict[str, object]] = {ACTION: {"maxAttempts": MAX_ATTEMPTS}}
#: ``STREAMER_MAX_RECOVERIES`` as the services see it (the default).
MAX_RECOVERIES = 3
KINDS = ("processor", "handler", "connect", "router")
#: DynamoDB as AWS runs it, for the fault phases (``streamer.local.faultproxy`` specs): a few
#: throttled calls and 500s (the SDK retries them), some slow ones, writes whose answer is
#: lost, and the requests table's indexes answering up to 1 s late. (Base-table queries —
#: the subscriptions of a request — are left current until they are read consistently.)
DYNAMODB_FAULTS: tuple[str, ...] = (
    "throttle:rate=0.03",
    "error:rate=0.01",
    "latency:rate=0.1,latency=0.02",
    "ambiguous:rate=0.05",
    "stale:rate=0.5,stale=1.0,ops=Query,tables=requests",
)
#: The clock-skew phases: one processor 5 s off, and the skew the processors tolerate.
SKEW_ENV: tuple[tuple[str, str], ...] = (("STREAMER_CLOCK_SKEW_SECONDS", "6"),)


@dataclasses.dataclass(frozen=True)
class ChaosConfig:
    requests: int = 1_000
    in_flight: int = 100
    clients: int = 40
    tenants: int = 4
    submit_seconds: float = 150.0
    kill_rounds: int = 4
    #: Seconds between the start of one fault and the next (random in this range).
    kill_gap: tuple[float, float] = (4.0, 10.0)
    #: Seconds a killed service stays down before its restart (random in this range).
    down_time: tuple[float, float] = (0.0, 1.5)
    outage_seconds: float = 10.0
    #: Longest a client waits for one answer before it checks the request's state.
    result_timeout: float = 120.0
    #: Longest one request may take end to end, resubmissions included.
    request_budget: float = 300.0
    #: Longest the whole run may take after the last submission.
    drain_budget: float = 240.0
    seed: int = 20261122
    processors: int = 2
    connects: int = 2
    #: Faults started together (1: one at a time). The outage always happens on its own.
    parallel: int = 1
    #: DynamoDB faults (``streamer.local.faultproxy`` specs) for the whole run; none: no proxy.
    faults: tuple[str, ...] = ()
    #: The second processor's clock is this far off (seconds; 0: no skew).
    skew_seconds: float = 0.0
    #: Extra environment for every service of the run's own stack.
    env: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass
class Tracked:
    """One request as its client saw it."""

    rid: str
    client: int
    marker: str
    submits: int = 0
    outcome: str | None = None  # completed | failed | stalled | gave_up
    result: Any = None
    error_code: str | None = None
    progress: int = 0


@dataclasses.dataclass
class Figures:
    mode: str
    requests: int
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    duplicates: int = 0
    lost: int = 0
    refused: int = 0
    failure_reasons: dict[str, int] = dataclasses.field(default_factory=dict)
    replays: int = 0
    resubmissions: int = 0
    progress_frames: int = 0
    clients: int = 0
    clients_resumed: int = 0
    kills: dict[str, int] = dataclasses.field(default_factory=dict)
    kills_survived: int = 0
    outage_seconds: float = 0.0
    unexpected_exits: dict[str, int] = dataclasses.field(default_factory=dict)
    secrets_in_logs: int = 0
    #: Requests two of whose handler runs overlapped in time (must be 0).
    concurrent_runs: int = 0
    #: Handler runs per request → how many requests ran that many times.
    handler_runs: dict[int, int] = dataclasses.field(default_factory=dict)
    #: Most handler runs one request may take: maxAttempts + STREAMER_MAX_RECOVERIES.
    runs_allowed: int = MAX_ATTEMPTS + MAX_RECOVERIES
    #: Calls the fault proxy answered with a fault, by kind.
    faults_injected: dict[str, int] = dataclasses.field(default_factory=dict)
    skew_seconds: float = 0.0
    seconds: float = 0.0
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("requests sent", self.requests),
            ("accepted", self.accepted),
            ("completed", self.completed),
            ("failed (with a reason)", self.failed),
            ("duplicates", self.duplicates),
            ("lost", self.lost),
            ("concurrent runs of one request", self.concurrent_runs),
            (
                "handler runs per request",
                f"{_fmt_runs(self.handler_runs)} (at most {self.runs_allowed} allowed)",
            ),
            ("kills survived", f"{self.kills_survived} ({_fmt(self.kills) or 'none'})"),
            ("DynamoDB unreachable", f"{self.outage_seconds:g} s, once" if self.outage_seconds else "never"),
            ("DynamoDB faults injected", _fmt(self.faults_injected) or "none"),
            ("clock skew of one processor", f"{self.skew_seconds:+g} s" if self.skew_seconds else "none"),
            ("clients that reconnected and resumed", f"{self.clients_resumed} of {self.clients}"),
            ("resubmissions (refused before acceptance)", self.resubmissions),
            ("identical `complete` re-deliveries", self.replays),
            ("progress frames received", self.progress_frames),
            ("services that exited on their own", _fmt(self.unexpected_exits) or "none"),
            ("log lines with a token or a payload", self.secrets_in_logs),
            ("failure reasons", _fmt(self.failure_reasons) or "none"),
            ("wall time", f"{self.seconds:.0f} s ({_fmt_seconds(self.phases)})"),
        ]
        lines = ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)


def _fmt_seconds(phases: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _fmt_runs(hist: dict[int, int]) -> str:
    """``1 run: 940, 2 runs: 60`` (requests by how many times the handler ran them)."""
    return ", ".join(f"{n} run{'s' if n != 1 else ''}: {c}" for n, c in sorted(hist.items())) or "none"


@dataclasses.dataclass
class HandlerRuns:
    """Every run of every request by the handler (from ``chaos_handler``'s file)."""

    per_request: dict[str, int]
    overlapping: dict[str, list[tuple[float, float]]]


def read_handler_runs(path: pathlib.Path) -> HandlerRuns:
    """Runs per request, and requests two of whose runs overlapped in time.

    A run without an end line was cut short by a SIGKILL of its handler process: it
    ended no later than the first run of the next handler process. A run that has no
    end and no later process never ended at all (it overlaps anything after it).
    """
    starts: dict[str, dict[str, Any]] = {}
    ends: dict[str, float] = {}
    first_start_of_pid: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue  # a line cut by a SIGKILL mid-write
            if "start" in doc:
                starts[doc["run"]] = doc
                pid = int(doc["pid"])
                first_start_of_pid[pid] = min(first_start_of_pid.get(pid, doc["start"]), doc["start"])
            elif "end" in doc:
                ends[doc["run"]] = float(doc["end"])
    pid_starts = sorted(first_start_of_pid.items(), key=lambda kv: kv[1])
    intervals: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for run, doc in starts.items():
        start = float(doc["start"])
        end = ends.get(run)
        if end is None:
            later = [t for pid, t in pid_starts if pid != doc["pid"] and t >= start]
            end = min(later) if later else float("inf")
        intervals[doc["rid"]].append((start, end))
    overlapping: dict[str, list[tuple[float, float]]] = {}
    for rid, spans in intervals.items():
        spans.sort()
        latest_end = spans[0][1]
        for start, end in spans[1:]:
            if start < latest_end:
                overlapping[rid] = spans
                break
            latest_end = max(latest_end, end)
    return HandlerRuns(
        per_request={rid: len(spans) for rid, spans in intervals.items()}, overlapping=overlapping
    )


class Recorder:
    """Every raw message one client received, reduced to what the checks need."""

    def __init__(self) -> None:
        self.completions: dict[str, list[str]] = collections.defaultdict(list)
        self.progress: collections.Counter[str] = collections.Counter()

    def __call__(self, msg: dict[str, Any]) -> None:
        rid = msg.get("request_id")
        if not isinstance(rid, str):
            return
        kind = msg.get("type")
        if kind == "complete" or (kind == "status" and msg.get("status") == COMPLETED and "result" in msg):
            self.completions[rid].append(json.dumps(msg.get("result"), sort_keys=True))
        elif kind == "progress":
            self.progress[rid] += 1


class Chaos:
    """One chaos run (see the module docstring)."""

    def __init__(
        self,
        config: ChaosConfig,
        *,
        run_dir: pathlib.Path,
        mode: str,
        stack: LocalStack | None = None,
        dynamodb: DynamoDBLocal | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.mode = mode
        self.rng = random.Random(config.seed)
        self.run_id = uuid.uuid4().hex[:6]
        # A stack handed in (with the DynamoDB Local it runs on) is used and left running.
        self.owned = stack is None
        self.dynamodb: DynamoDBLocal | None = dynamodb
        self.stack: LocalStack | None = stack
        self.proxy: FaultProxy | None = None
        self.busy: set[str] = set()  # services the driver is handling (the supervisor keeps off)
        self.kills: collections.Counter[str] = collections.Counter()
        self.unexpected: collections.Counter[str] = collections.Counter()
        self.exit_notes: list[str] = []
        self.outage_done = 0.0
        self.tracked: list[Tracked] = []
        self.recorders: list[Recorder] = []
        self.clients: list[StreamerClient] = []
        self.tokens: list[str] = []
        self.load_done = asyncio.Event()

    # ------------------------------------------------------------------ setup
    async def start(self) -> None:
        if not self.owned:
            assert self.stack is not None and self.dynamodb is not None
            return
        cfg = self.config
        if cfg.faults:
            # DynamoDB Local first, then the proxy on it, then the stack on the proxy.
            self.dynamodb = await start_dynamodb(self.run_dir)
            self.proxy = FaultProxy(
                self.dynamodb.endpoint, faults=[parse_fault(f) for f in cfg.faults], seed=cfg.seed
            )
            await self.proxy.start()
        self.dynamodb, self.stack = await start_chaos_stack(
            run_dir=self.run_dir,
            processors=cfg.processors,
            connects=cfg.connects,
            env=dict(cfg.env),
            dynamodb=self.dynamodb,
            endpoint=self.proxy.endpoint if self.proxy is not None else None,
        )
        if cfg.skew_seconds:
            await self.skew(self._names("processor")[-1], cfg.skew_seconds)

    def _names(self, kind: str) -> list[str]:
        assert self.stack is not None
        return sorted(n for n, s in self.stack.services.items() if s.kind == kind)

    async def skew(self, name: str, seconds: float) -> None:
        """Restart ``name`` with its wall clock ``seconds`` off (see ``skew/sitecustomize.py``)."""
        assert self.stack is not None
        service = self.stack.service(name)
        path = service.env.get("PYTHONPATH", "")
        service.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE / "skew"), path) if p)
        service.env["STREAMER_TEST_CLOCK_OFFSET_SECONDS"] = repr(seconds)
        await self._restart(name)

    async def stop(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=5)
        if not self.owned:
            return
        if self.stack is not None:
            await self.stack.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        if self.dynamodb is not None:
            await asyncio.to_thread(self.dynamodb.stop)

    # ------------------------------------------------------------------ faults
    def _pick(self, kind: str) -> str:
        return self.rng.choice(self._names(kind))

    async def kill_and_restart(self, kind: str) -> None:
        assert self.stack is not None
        name = self._pick(kind)
        self.busy.add(name)
        try:
            await self.stack.kill(name)
            self.kills[kind] += 1
            log.info("chaos: killed %s", name)
            await asyncio.sleep(self.rng.uniform(*self.config.down_time))
            await self._restart(name)
        finally:
            self.busy.discard(name)

    async def _restart(self, name: str) -> None:
        assert self.stack is not None
        for attempt in range(5):
            try:
                await self.stack.restart(name, kill_first=True)
                return
            except StackError as exc:
                self.exit_notes.append(f"restart of {name} failed (attempt {attempt + 1}): {str(exc)[:300]}")
                await asyncio.sleep(1.0)
        raise AssertionError(f"{name} could not be restarted:\n" + "\n".join(self.exit_notes[-3:]))

    async def dynamodb_outage(self) -> None:
        assert self.dynamodb is not None
        log.info("chaos: DynamoDB down for %ss", self.config.outage_seconds)
        started = time.monotonic()
        await asyncio.to_thread(self.dynamodb.stop)
        # Down for outage_seconds from the moment it stopped answering; starting again adds
        # its start-up time, which the figures include (the measured unreachable time).
        await asyncio.sleep(max(0.0, self.config.outage_seconds - (time.monotonic() - started)))
        for attempt in range(10):
            try:
                await self.dynamodb.start(timeout=30)
                break
            except Exception as exc:  # the port may still be in TIME_WAIT for a moment
                self.exit_notes.append(f"DynamoDB restart attempt {attempt + 1}: {exc}")
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("DynamoDB Local did not come back")
        self.outage_done = time.monotonic() - started
        log.info("chaos: DynamoDB back after %.1fs", self.outage_done)

    async def driver(self) -> None:
        """``kill_rounds`` rounds of one kill of each kind (shuffled); the outage once, mid-way."""
        faults: list[str] = []
        for _ in range(self.config.kill_rounds):
            round_ = list(KINDS)
            self.rng.shuffle(round_)
            faults += round_
        step = max(1, self.config.parallel)
        batches: list[list[str]] = [faults[i : i + step] for i in range(0, len(faults), step)]
        if self.config.outage_seconds > 0:
            batches.insert(len(batches) // 2, ["dynamodb"])
        for batch in batches:
            await asyncio.sleep(self.rng.uniform(*self.config.kill_gap))
            if batch == ["dynamodb"]:
                await self.dynamodb_outage()
            else:
                await asyncio.gather(*(self.kill_and_restart(kind) for kind in batch))

    async def supervisor(self, stop: asyncio.Event) -> None:
        """Restart services that exited on their own, as Kubernetes would."""
        assert self.stack is not None
        while not stop.is_set():
            for name, service in list(self.stack.services.items()):
                if name in self.busy or service.running:
                    continue
                code = service.process.returncode if service.process is not None else None
                self.unexpected[name] += 1
                self.exit_notes.append(f"{name} exited on its own with status {code}:\n{service.log_tail(8)}")
                self.busy.add(name)
                try:
                    await self._restart(name)
                finally:
                    self.busy.discard(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)

    # ------------------------------------------------------------------ load
    async def open_clients(self) -> None:
        assert self.stack is not None
        urls = self.stack.ws_urls
        for i in range(self.config.clients):
            recorder = Recorder()
            token = self.stack.token(user=f"user-{i}", tenant=f"tenant-{i % self.config.tenants}")
            self.tokens.append(token)
            client = StreamerClient(
                urls[i % len(urls)],
                token=token,
                reconnect_delay=0.1,
                reconnect_max_delay=2.0,
                max_reconnect_attempts=200,
                on_message=recorder,
                heartbeat=10.0,
            )
            await client.connect()
            self.clients.append(client)
            self.recorders.append(recorder)

    async def one_request(self, t: Tracked) -> None:
        client = self.clients[t.client]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_budget
        handle = None
        while loop.time() < deadline and t.submits < 200:
            if handle is None:
                t.submits += 1
                try:
                    handle = await asyncio.wait_for(
                        client.start(ACTION, {"message": t.marker}, request_id=t.rid), timeout=30
                    )
                except (StreamerError, TimeoutError):
                    await asyncio.sleep(0.5)
                    continue
            try:
                t.result = await handle.result(timeout=self.config.result_timeout)
                t.outcome = "completed"
                return
            except StreamerError as exc:
                if not handle.done:
                    if loop.time() < deadline:
                        # Slow, not necessarily lost (an outage, recoveries, a loaded machine):
                        # the client keeps waiting until the request's budget is spent.
                        continue
                    # No answer within the budget: whatever the server did, the client never heard.
                    t.outcome = "stalled"
                    return
                if exc.retryable and exc.code in ("SERVICE_UNAVAILABLE", "RATE_LIMITED", "INTERNAL_ERROR"):
                    handle = None  # refused before (or while) being accepted: send the same id again
                    await asyncio.sleep(min(2.0, 0.2 * t.submits))
                    continue
                t.outcome = "failed"
                t.error_code = exc.code
                return
        t.outcome = "gave_up"

    async def load(self) -> None:
        cfg = self.config
        gate = asyncio.Semaphore(cfg.in_flight)
        tasks: list[asyncio.Task[None]] = []
        interval = cfg.submit_seconds / max(1, cfg.requests)
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def guarded(t: Tracked) -> None:
            try:
                await self.one_request(t)
            finally:
                gate.release()

        for i in range(cfg.requests):
            await gate.acquire()
            wait = start + i * interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            t = Tracked(
                rid=f"chaos-{self.run_id}-{i:05d}",
                client=i % cfg.clients,
                marker=f"pl-{i}-{uuid.uuid4().hex[:8]}-payload",
            )
            self.tracked.append(t)
            tasks.append(asyncio.create_task(guarded(t)))
        await asyncio.wait(tasks, timeout=cfg.request_budget + 30)
        self.load_done.set()

    # ------------------------------------------------------------------ run
    async def run(self) -> Figures:
        started = time.monotonic()
        phases: dict[str, float] = {}
        await self.start()
        phases["start"] = time.monotonic() - started
        assert self.stack is not None
        stop_supervisor = asyncio.Event()
        supervisor = asyncio.create_task(self.supervisor(stop_supervisor))
        try:
            await self.open_clients()
            load = asyncio.create_task(self.load())
            driver = asyncio.create_task(self.driver())
            mark = time.monotonic()
            await asyncio.wait_for(driver, timeout=self.config.submit_seconds + self.config.drain_budget)
            phases["faults"] = time.monotonic() - mark
            await asyncio.wait_for(load, timeout=self.config.request_budget + self.config.drain_budget)
            phases["load"] = time.monotonic() - mark
            stop_supervisor.set()
            await supervisor
            # Every service is up again at the end.
            await self.stack.wait_ready(list(self.stack.services), timeout=60)
            mark = time.monotonic()
            figures = await self.verify()
            phases["verify"] = time.monotonic() - mark
        finally:
            stop_supervisor.set()
            supervisor.cancel()
            with contextlib.suppress(BaseException):
                await supervisor
            mark = time.monotonic()
            await self.stop()
            phases["stop"] = time.monotonic() - mark
        figures.seconds = time.monotonic() - started
        figures.phases = phases
        return figures

    async def verify(self) -> Figures:
        assert self.stack is not None
        cfg = self.config
        figures = Figures(mode=self.mode, requests=len(self.tracked), clients=len(self.clients))
        records: dict[str, Any] = {}
        async with Store.open(settings=self.stack.settings) as store:
            for t in self.tracked:
                records[t.rid] = await store.requests.get(
                    request_key(f"tenant-{t.client % cfg.tenants}", t.rid)
                )
        reasons: collections.Counter[str] = collections.Counter()
        for t in self.tracked:
            record = records[t.rid]
            recorder = self.recorders[t.client]
            figures.resubmissions += max(0, t.submits - 1)
            figures.progress_frames += recorder.progress[t.rid]
            if record is None:
                figures.refused += 1
                if t.outcome in ("completed", "failed"):
                    figures.problems.append(f"{t.rid}: client got {t.outcome} but nothing is stored")
                continue
            figures.accepted += 1
            if record.status not in TERMINAL:
                figures.lost += 1
                figures.problems.append(f"{t.rid}: still {record.status} at the end (client: {t.outcome})")
                continue
            if record.status == COMPLETED:
                figures.completed += 1
            elif record.status == FAILED:
                figures.failed += 1
                err = record.error if isinstance(record.error, dict) else {}
                reasons[f"{err.get('code', '?')}: {str(err.get('message', ''))[:60]}"] += 1
            else:
                figures.cancelled += 1
                figures.problems.append(f"{t.rid}: {record.status}, but nobody cancelled it")
            if t.outcome not in ("completed", "failed"):
                figures.lost += 1
                figures.problems.append(f"{t.rid}: {record.status} but its client never heard ({t.outcome})")
                continue
            seen = recorder.completions.get(t.rid, [])
            distinct = set(seen)
            figures.replays += len(seen) - len(distinct)
            stored = json.dumps(record.result, sort_keys=True) if record.status == COMPLETED else None
            if len(distinct) > 1 or (stored is not None and distinct and distinct != {stored}):
                figures.duplicates += 1
                figures.problems.append(f"{t.rid}: completions seen {sorted(distinct)} vs stored {stored}")
            if record.status == COMPLETED:
                if t.outcome != "completed":
                    figures.problems.append(f"{t.rid}: COMPLETED but its client got {t.error_code}")
                    figures.lost += 1
                elif not isinstance(t.result, dict) or t.result.get("message") != t.marker:
                    figures.problems.append(f"{t.rid}: wrong result {str(t.result)[:80]}")
            elif t.outcome != "failed":
                figures.problems.append(f"{t.rid}: FAILED but its client got a result")
        figures.failure_reasons = dict(reasons)
        figures.clients_resumed = sum(1 for c in self.clients if c.reconnects > 0)
        figures.kills = dict(self.kills)
        figures.kills_survived = sum(self.kills.values())
        figures.outage_seconds = round(self.outage_done, 1) if cfg.outage_seconds > 0 else 0.0
        figures.unexpected_exits = dict(self.unexpected)
        figures.problems.extend(self.exit_notes)
        figures.secrets_in_logs = self.scan_logs(figures.problems)
        self.count_runs(figures)
        if self.proxy is not None:
            kinds: collections.Counter[str] = collections.Counter()
            for (_, outcome), n in self.proxy.counts.items():
                if outcome != "forwarded":
                    kinds[outcome] += n
            figures.faults_injected = dict(kinds)
        figures.skew_seconds = cfg.skew_seconds
        return figures

    def count_runs(self, figures: Figures) -> None:
        """Handler runs per request of this run, and requests whose runs overlapped."""
        assert self.stack is not None and self.stack.run_dir is not None
        runs = read_handler_runs(self.stack.run_dir / RUNS_FILE)
        ours = {t.rid for t in self.tracked}
        hist: collections.Counter[int] = collections.Counter()
        for rid in ours:
            n = runs.per_request.get(rid, 0)
            hist[n] += 1
            if n > figures.runs_allowed:
                figures.problems.append(f"{rid}: the handler ran it {n} times")
        figures.handler_runs = dict(hist)
        overlapping = sorted(set(runs.overlapping) & ours)
        figures.concurrent_runs = len(overlapping)
        for rid in overlapping[:5]:
            spans = ", ".join(f"{a:.3f}-{b:.3f}" for a, b in runs.overlapping[rid])
            figures.problems.append(f"{rid}: handler runs overlapped: {spans}")

    def scan_logs(self, problems: list[str]) -> int:
        """Log lines of any service that carry a client's token or a request's payload marker."""
        assert self.stack is not None
        marker = re.compile(r"pl-\d+-[0-9a-f]{8}-payload")
        signatures = [t.rsplit(".", 1)[-1] for t in self.tokens]
        found = 0
        for name, service in self.stack.services.items():
            if service.log_path is None or not service.log_path.exists():
                continue
            for line in service.log_path.read_text(errors="replace").splitlines():
                if marker.search(line) or any(sig in line for sig in signatures):
                    found += 1
                    if found <= 5:
                        problems.append(f"secret in {name}'s log: {line[:300]}")
        return found


async def start_dynamodb(run_dir: pathlib.Path) -> DynamoDBLocal:
    """DynamoDB Local on disk (``run_dir/dynamodb``), so it can be stopped and started again."""
    db_dir = run_dir / "dynamodb"
    db_dir.mkdir(parents=True, exist_ok=True)
    dynamodb = DynamoDBLocal(db_path=str(db_dir))
    await dynamodb.start()
    return dynamodb


async def start_chaos_stack(
    *,
    run_dir: pathlib.Path,
    processors: int,
    connects: int,
    env: dict[str, str] | None = None,
    dynamodb: DynamoDBLocal | None = None,
    endpoint: str | None = None,
) -> tuple[DynamoDBLocal, LocalStack]:
    """DynamoDB Local on disk (restartable; ``dynamodb`` if given) and a local stack on it
    (or on ``endpoint``, a fault proxy in front of it). The handler records its runs."""
    if dynamodb is None:
        dynamodb = await start_dynamodb(run_dir)
    stack_dir = run_dir / "stack"
    python_path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    stack = LocalStack(
        dynamodb_endpoint=endpoint or dynamodb.endpoint,
        table_prefix=f"chaos{uuid.uuid4().hex[:6]}",
        processors=processors,
        connects=connects,
        handler="chaos_handler",
        env={
            **CHAOS_ENV,
            "PYTHONPATH": python_path,
            "STREAMER_CHAOS_RUNS_FILE": str(stack_dir / RUNS_FILE),
            **(env or {}),
        },
        action_overrides=ACTION_OVERRIDES,
        run_dir=stack_dir,
        ready_timeout=90,
    )
    try:
        await stack.start()
    except BaseException:
        await asyncio.to_thread(dynamodb.stop)
        raise
    return dynamodb, stack


async def run_chaos(
    config: ChaosConfig,
    *,
    run_dir: pathlib.Path,
    mode: str,
    stack: LocalStack | None = None,
    dynamodb: DynamoDBLocal | None = None,
) -> Figures:
    return await Chaos(config, run_dir=run_dir, mode=mode, stack=stack, dynamodb=dynamodb).run()


def write_section(marker: str, body: str, *, path: pathlib.Path = RELIABILITY_DOC) -> None:
    """Replace the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in the doc."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{body.strip()}\n{end}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{start}\n{body.strip()}\n{end}\n"
    path.write_text(text)
