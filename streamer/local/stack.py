"""The whole product on one machine: :class:`LocalStack` (``streamer dev``, e2e tests, demo, benchmarks).

Each service runs as its own process, exactly as in the cluster (DESIGN §4), started
with ``python -m streamer.cli.main <service>`` on loopback with every port picked free
— so two stacks run side by side. The handler registry is a file: the handler's
``StreamerHandler`` document with ``status.endpoint`` set to where the handler process
listens, written into the stack's run directory.

Process hygiene, because a dev tool that leaks servers is worse than none:

- every child starts in its own session (its own process group), so a Ctrl-C in the
  terminal reaches only ``streamer dev``, which then stops the children in order
  (connect first so clients see a clean 1001, then processor, router, handler);
- stopping signals the child's whole group (SIGTERM, then SIGKILL after a grace period);
- on Linux each child also arms ``PR_SET_PDEATHSIG`` = SIGTERM at start
  (:mod:`streamer.local.parent`): if the launcher dies without cleaning up (SIGKILL),
  the kernel tells the children to stop;
- an ``atexit`` hook kills whatever is still running when the interpreter exits.

Tests and chaos runs use :meth:`LocalStack.kill` (SIGKILL one service) and
:meth:`LocalStack.restart` (same ports, same arguments, wait until ready again).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import aiohttp
import yaml

from streamer.config import Settings, load_settings
from streamer.local import parent
from streamer.local.devauth import DEV_JWT_SECRET, dev_token
from streamer.local.dynamodb import DynamoDBLocal
from streamer.local.ports import free_port
from streamer.retry import Backoff

if TYPE_CHECKING:
    from streamer.local.dns import DnsStub

__all__ = ["READY_LINE", "LocalStack", "ServiceProcess", "StackError", "ready_line"]

HOST = "127.0.0.1"
#: Services reached through one name when they run several replicas (as headless Services).
NAMED: Mapping[str, str] = {
    "handler": "handler.streamer.local",
    "router": "router.streamer.local",
    "processor": "processor.streamer.local",  # the routers' direct-dispatch offers
}
#: Replica N of a named service binds 127.0.<net>.N.
REPLICA_NETS: Mapping[str, int] = {"handler": 1, "router": 2, "processor": 3}
#: Restart backoff of the supervisor: first wait, cap, and how long up counts as recovered.
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
_RESTART_BACKOFF = Backoff(base=RESTART_FIRST_SECONDS, cap=RESTART_MAX_SECONDS, jitter=0.0)
RESTART_RESET_SECONDS = 30.0
READY_LINE = "Streamer is ready: {url}"
#: Defaults of the local stack that differ from the services' own (quick drain on Ctrl-C).
DEV_DEFAULTS: Mapping[str, str] = {
    "STREAMER_DRAIN_SECONDS": "2",
    "STREAMER_LOG_LEVEL": "INFO",
}
_OWNED = frozenset(
    {
        "STREAMER_DYNAMODB_ENDPOINT",
        "STREAMER_TABLE_PREFIX",
        "STREAMER_REGISTRY_FILE",
        "STREAMER_HOST",
        "STREAMER_WS_PORT",
        "STREAMER_GRPC_PORT",
        "STREAMER_HTTP_PORT",
        "STREAMER_ROUTER_ADDRESS",
        "STREAMER_ADVERTISE_ADDRESS",
        "STREAMER_WORKER_ID",
        "STREAMER_PROCESSOR_ADDRESSES",
        "POD_IP",
    }
)


def ready_line(url: str) -> str:
    """The one line ``streamer dev`` prints once every service is healthy."""
    return READY_LINE.format(url=url)


class StackError(RuntimeError):
    """The local stack could not start (a service exited or never became ready)."""


@dataclasses.dataclass
class ServiceProcess:
    """One service of the stack: how it is started, its ports, its process."""

    name: str
    kind: str  # connect | router | processor | handler
    argv: list[str]
    env: dict[str, str]
    http_port: int
    grpc_port: int | None = None
    ws_port: int | None = None
    log_path: pathlib.Path | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: The loopback address it binds (replicas behind a DNS name each get their own).
    host: str = "127.0.0.1"
    #: Behind its kind's DNS name (:data:`NAMED`) while it is up.
    named: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def grpc_address(self) -> str | None:
        return f"{self.host}:{self.grpc_port}" if self.grpc_port else None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(logs went to stderr)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class LocalStack:
    """DynamoDB Local (unless given an endpoint), tables, connect, router, processor and a handler.

    ::

        async with LocalStack(env={"STREAMER_SWEEP_INTERVAL_SECONDS": "0.5"}) as stack:
            async with StreamerClient(stack.ws_url, token=stack.token()) as client:
                ...
            await stack.kill("processor")
            await stack.restart("processor")

    :param ws_port: WebSocket port of the first connect (default: a free one).
    :param dynamodb_endpoint: use this DynamoDB instead of starting DynamoDB Local.
    :param table_prefix: table name prefix (default ``streamer``; tests pass a unique one).
    :param processors: number of processor processes; ``connects``: connect processes.
    :param routers: router processes; ``handlers``: handler processes. With more than one,
        they sit behind a DNS name each (:mod:`streamer.local.dns`), as behind a headless
        Service: every replica its own loopback address, one port; replicas can then be
        added and removed while the stack runs (:meth:`add_replica`, :meth:`remove_replica`).
    :param handler: what ``streamer handler`` serves (an entry point name or module).
    :param env: extra environment for every service (short intervals in tests...).
    :param run_dir: where the registry file and logs go (default: a new temp dir).
    :param log_to_stderr: children log to this process's stderr instead of files.
    :param action_overrides: per action name, fields merged into its registry entry
        (e.g. ``{"generate_report": {"maxAttempts": 5}}``), as an operator could set them
        in the StreamerHandler resource.
    :param dedicated: actions served from a dedicated queue, as a StreamerHandler with
        ``spec.queue.mode: dedicated`` is in a cluster: they move to a second registry
        document (``<handler>-dedicated``, same handler processes) whose requests go to
        their own table (``<prefix>-requests.default.<handler>-dedicated``, with its
        stream), consumed by their own processor (``processor-dedicated``).
    """

    def __init__(
        self,
        *,
        ws_port: int | None = None,
        dynamodb_endpoint: str | None = None,
        table_prefix: str | None = None,
        processors: int = 1,
        connects: int = 1,
        routers: int = 1,
        handlers: int = 1,
        handler: str = "examples",
        env: Mapping[str, str] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        log_to_stderr: bool = False,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        python: str | None = None,
        action_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        dedicated: Sequence[str] = (),
    ) -> None:
        if min(processors, connects, routers, handlers) < 1:
            raise ValueError("a stack needs at least one replica of each service")
        self.requested_ws_port = ws_port
        self.requested_endpoint = dynamodb_endpoint
        self.processors = processors
        self.connects = connects
        self.routers = routers
        self.handlers = handlers
        #: Handlers and routers behind a DNS name (several replicas, added and removed at will).
        self.dns: DnsStub | None = None
        self._shared_ports: dict[str, int] = {}
        self._cli: list[str] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._restarts: dict[str, asyncio.Task[None]] = {}
        #: Services the stack itself is starting, stopping or restarting (the supervisor keeps off).
        self._managed: set[str] = set()
        self.handler_target = handler
        self.dedicated = list(dedicated)
        self.dedicated_table: str | None = None
        self.extra_env = dict(env or {})
        self._run_dir_arg = pathlib.Path(run_dir) if run_dir is not None else None
        self.run_dir: pathlib.Path | None = None
        self.log_to_stderr = log_to_stderr
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.python = python or sys.executable
        self.action_overrides = {k: dict(v) for k, v in (action_overrides or {}).items()}
        self.dynamodb: DynamoDBLocal | None = None
        self.dynamodb_endpoint: str | None = dynamodb_endpoint
        self.table_prefix = table_prefix or os.environ.get("STREAMER_TABLE_PREFIX") or "streamer"
        self.services: dict[str, ServiceProcess] = {}
        self.env: dict[str, str] = {}
        self.registry_file: pathlib.Path | None = None
        #: The names of the actions the handler serves (known once the stack is planned).
        self.action_names: list[str] = []
        self.jwt_secret: str | None = None
        self.dev_secret_used = False
        self._log_files: list[IO[bytes]] = []
        self._started = False
        self._atexit: Callable[[], None] | None = None

    # ------------------------------------------------------------------ accessors
    @property
    def ws_url(self) -> str:
        """The WebSocket URL of the first connect."""
        return self.ws_urls[0]

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://{HOST}:{s.ws_port}/ws" for s in self.services.values() if s.kind == "connect"]

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """Running child processes by service name (DynamoDB Local excluded)."""
        return {name: s.process for name, s in self.services.items() if s.process is not None}

    @property
    def settings(self) -> Settings:
        """Settings as the services see them (to open the Store from a test)."""
        return load_settings(self.env)

    def token(
        self, *, user: str = "dev-user", tenant: str = "dev-tenant", permissions: Sequence[str] = ()
    ) -> str:
        """A token the stack accepts (HS256 with the stack's secret)."""
        if self.jwt_secret is None:
            raise StackError(
                "the stack does not use an HS256 secret; make tokens with your identity provider"
            )
        return dev_token(
            user=user, tenant=tenant, permissions=permissions, secret=self.jwt_secret, env=self.env
        )

    def service(self, name: str) -> ServiceProcess:
        try:
            return self.services[name]
        except KeyError:
            raise KeyError(f"no service {name!r}; the stack has {sorted(self.services)}") from None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> LocalStack:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> LocalStack:
        """Start everything and wait until every service is ready; raises :class:`StackError`."""
        if self._started:
            return self
        self._started = True
        self._atexit = self.kill_all
        atexit.register(self._atexit)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        if self._run_dir_arg is not None:
            self._run_dir_arg.mkdir(parents=True, exist_ok=True)
            self.run_dir = self._run_dir_arg
        else:
            self.run_dir = pathlib.Path(tempfile.mkdtemp(prefix="streamer-dev-"))
        (self.run_dir / "logs").mkdir(exist_ok=True)

        if self.dynamodb_endpoint is None:
            self.dynamodb = DynamoDBLocal()
            await self.dynamodb.start()
            self.dynamodb_endpoint = self.dynamodb.endpoint

        self.env = self._base_env()
        from streamer.store.tables import ensure_tables

        await ensure_tables(settings=load_settings(self.env))
        self._plan()
        if self.dedicated_table:
            from streamer.store.dynamo import open_client
            from streamer.store.tables import repair_table, requests_table_definition

            async with open_client("dynamodb", settings=load_settings(self.env)) as client:
                await repair_table(client, requests_table_definition(self.dedicated_table))
        # Dependencies first: the router reads the handler's registry entry, connect
        # needs the router; the processor only needs DynamoDB and the handler.
        order = [n for kind in ("handler", "router", "processor", "connect") for n in self._names(kind)]
        for name in order:
            self._spawn(self.services[name])
        for kind in NAMED:
            self._publish(kind)
        await self.wait_ready(list(self.services))

    def _base_env(self) -> dict[str, str]:
        # The user's environment (their STREAMER_* settings included), minus what the
        # stack must own per service: addresses, ports, the registry, the worker id.
        env = {k: v for k, v in os.environ.items() if k not in _OWNED}
        for key, value in DEV_DEFAULTS.items():
            env.setdefault(key, value)
        env.update(self.extra_env)
        assert self.dynamodb_endpoint is not None
        env["STREAMER_DYNAMODB_ENDPOINT"] = self.dynamodb_endpoint
        env["STREAMER_TABLE_PREFIX"] = self.table_prefix
        env["STREAMER_HOST"] = HOST
        if "AWS_ACCESS_KEY_ID" not in env and "AWS_PROFILE" not in env:
            env["AWS_ACCESS_KEY_ID"] = "local"
            env["AWS_SECRET_ACCESS_KEY"] = "local"  # DynamoDB Local accepts any credentials
        env.setdefault("AWS_REGION", "us-east-1")
        env["PYTHONUNBUFFERED"] = "1"
        if not env.get("STREAMER_JWT_SECRET") and not (
            env.get("STREAMER_JWT_PUBLIC_KEY") or env.get("STREAMER_JWKS_URL")
        ):
            env["STREAMER_JWT_SECRET"] = DEV_JWT_SECRET
            self.dev_secret_used = True
        self.jwt_secret = env.get("STREAMER_JWT_SECRET") or None
        return env

    def _plan(self) -> None:
        """Pick ports, write the registry file, and build each service's command line."""
        from streamer.sdk import HandlerLoadError, load_actions, registry_document

        assert self.run_dir is not None
        self._cli = [self.python, "-m", "streamer.cli.main"]
        if self.handlers > 1 or self.routers > 1:
            from streamer.local.dns import DnsStub

            self.dns = DnsStub(NAMED.values()).start()
        self._shared_ports = {kind: self._port_for(kind) for kind in NAMED}
        try:
            name, actions = load_actions(self.handler_target)
        except HandlerLoadError as exc:
            raise StackError(str(exc)) from None
        self.action_names = [action.name for action in actions]
        doc = registry_document(actions, name=name, endpoint=self.target("handler"))
        unknown = set(self.action_overrides) - {a["name"] for a in doc["spec"]["actions"]}
        if unknown:
            raise StackError(f"action_overrides name actions the handler does not serve: {sorted(unknown)}")
        for entry in doc["spec"]["actions"]:
            entry.update(self.action_overrides.get(entry["name"], {}))
        docs = self._split_dedicated(doc) if self.dedicated else [doc]
        self.registry_file = self.run_dir / "registry.yaml"
        self.registry_file.write_text(
            "# Written by the local stack: the handler as the file registry sees it.\n"
            + yaml.safe_dump_all(docs, sort_keys=False, width=100)
        )
        self.env["STREAMER_REGISTRY_FILE"] = str(self.registry_file)
        # Processors before the router: their Offer ports go into the router's environment
        # for direct dispatch (the router is still started before them, see _start).
        counts = {"handler": self.handlers, "processor": self.processors}
        counts.update({"router": self.routers, "connect": self.connects})
        for kind, count in counts.items():
            for index in range(1, count + 1):
                self._replica(kind, index)
        if self.dedicated_table:
            # The dedicated queue's own processor: built after the routers, so they do
            # not offer it anything (it takes its requests from its own table's stream).
            queue = self._replica("processor", 1, name="processor-dedicated", named=False)
            queue.env["STREAMER_REQUESTS_TABLE"] = self.dedicated_table
            queue.env["STREAMER_QUEUE_HANDLER"] = f"default/{docs[-1]['metadata']['name']}"

    def _split_dedicated(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """The handler's document split in two: its shared actions, and the dedicated ones."""
        from streamer.store.tables import dedicated_requests_table

        unknown = set(self.dedicated) - {a["name"] for a in doc["spec"]["actions"]}
        if unknown:
            raise StackError(f"dedicated names actions the handler does not serve: {sorted(unknown)}")
        shared = [a for a in doc["spec"]["actions"] if a["name"] not in self.dedicated]
        mine = [a for a in doc["spec"]["actions"] if a["name"] in self.dedicated]
        name = f"{doc['metadata']['name']}-dedicated"
        self.dedicated_table = dedicated_requests_table(self.table_prefix, "default", name)
        other = {
            **doc,
            "metadata": {"name": name},
            "spec": {**doc["spec"], "actions": mine, "queue": {"mode": "dedicated"}},
            "status": {**doc["status"], "queue": {"mode": "dedicated", "table": self.dedicated_table}},
        }
        return ([{**doc, "spec": {**doc["spec"], "actions": shared}}] if shared else []) + [other]

    def target(self, kind: str) -> str:
        """The gRPC target through which the other services reach ``kind`` (handler, router)."""
        port = self._shared_ports[kind]
        if self.dns is not None:
            return self.dns.target(NAMED[kind], port)
        return f"{HOST}:{port}"

    def _named(self, kind: str) -> bool:
        """Whether replicas of ``kind`` sit behind a DNS name in this stack."""
        return self.dns is not None and kind in NAMED

    def _host(self, kind: str, index: int) -> str:
        """Replicas behind a DNS name each bind their own loopback address (a pod's IP)."""
        if not self._named(kind):
            return HOST
        return f"127.0.{REPLICA_NETS[kind]}.{index}"

    def _port_for(self, kind: str) -> int:
        """A port free on the first replicas' addresses (replicas share it, as pods do)."""
        for _ in range(50):
            port = free_port(HOST)
            if self.dns is None:
                return port
            try:
                for index in range(1, 9):
                    with socket.socket() as probe:
                        probe.bind((self._host(kind, index), port))
            except OSError:
                continue
            return port
        raise StackError(f"no port free on every {kind} replica address")

    def _names(self, kind: str) -> list[str]:
        return [n for n, s in self.services.items() if s.kind == kind]

    def _replica(
        self, kind: str, index: int, *, name: str | None = None, named: bool = True
    ) -> ServiceProcess:
        """Build (not start) replica ``index`` of ``kind`` and add it to :attr:`services`.

        ``named=False`` keeps it out of its kind's DNS name (the dedicated queue's
        processor: the routers must not offer it the shared queue's requests).
        """
        assert self.run_dir is not None and self.registry_file is not None
        name = name or (kind if index == 1 else f"{kind}-{index}")
        named = named and self._named(kind)
        host = self._host(kind, index) if named else HOST
        http = free_port(host)
        env = dict(self.env)
        env["STREAMER_HTTP_PORT"] = str(http)
        registry = str(self.registry_file)
        grpc: int | None = None
        ws: int | None = None
        if kind == "handler":
            grpc = self._shared_ports["handler"]
            args = ["handler", self.handler_target, "--host", host, "--port", str(grpc)]
            args += ["--http-port", str(http)]
        elif kind == "processor":
            grpc = self._shared_ports["processor"] if named else free_port(HOST)
            env["STREAMER_HOST"] = host
            args = ["processor", "--http-port", str(http), "--grpc-port", str(grpc), "--registry", registry]
        elif kind == "router":
            grpc = self._shared_ports["router"]
            args = ["router", "--host", host, "--port", str(grpc), "--http-port", str(http)]
            args += ["--registry", registry]
            # A caller's own STREAMER_PROCESSOR_ADDRESSES wins (tests point it elsewhere;
            # an empty value turns direct dispatch off).
            if "STREAMER_PROCESSOR_ADDRESSES" not in self.extra_env:
                if self._named("processor"):
                    env["STREAMER_PROCESSOR_ADDRESSES"] = self.target("processor")  # re-resolved
                else:
                    offers = [self.services[n].grpc_address or "" for n in self._names("processor")]
                    env["STREAMER_PROCESSOR_ADDRESSES"] = ",".join(offers)
        elif kind == "connect":
            ws = self.requested_ws_port if (index == 1 and self.requested_ws_port) else free_port(HOST)
            grpc = free_port(HOST)
            router = self.target("router")
            args = ["connect", "--host", HOST, "--port", str(ws), "--grpc-port", str(grpc)]
            args += ["--http-port", str(http), "--router", router]
            env["STREAMER_ROUTER_ADDRESS"] = router
            env["STREAMER_ADVERTISE_ADDRESS"] = f"{HOST}:{grpc}"
        else:
            raise ValueError(f"unknown service kind {kind!r}")
        if grpc is not None:
            env["STREAMER_GRPC_PORT"] = str(grpc)
        if ws is not None:
            env["STREAMER_WS_PORT"] = str(ws)
        log_path = None if self.log_to_stderr else self.run_dir / "logs" / f"{name}.log"
        service = ServiceProcess(
            name=name,
            kind=kind,
            argv=[*self._cli, *args],
            env=env,
            http_port=http,
            grpc_port=grpc,
            ws_port=ws,
            log_path=log_path,
            host=host,
            named=named,
        )
        self.services[name] = service
        return service

    def _publish(self, kind: str, *, without: str | None = None) -> None:
        """Point ``kind``'s DNS name at its replicas that are up (all but ``without``)."""
        if self.dns is None or not self._named(kind):
            return
        hosts = [
            s.host
            for n, s in self.services.items()
            if s.kind == kind and s.named and n != without and s.running
        ]
        self.dns.set(NAMED[kind], hosts)

    def _spawn(self, service: ServiceProcess) -> None:
        if service.kind == "processor":
            # A fresh lease/claim owner per start, as a new pod would get: a restarted
            # processor must not mistake the dead one's claims for its own.
            service.env["STREAMER_WORKER_ID"] = f"{service.name}-{uuid.uuid4().hex[:8]}"
        stdout: Any
        if service.log_path is not None:
            log = open(service.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
            self._log_files.append(log)
            stdout = log
        else:
            # The launcher's stderr, so that its stdout carries only the ready line.
            try:
                stdout = sys.stderr.fileno()
            except (AttributeError, OSError, ValueError):
                stdout = None
        service.process = subprocess.Popen(
            service.argv,
            env={**service.env, parent.ENV: str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        service.starts += 1

    async def wait_ready(self, names: Sequence[str], *, timeout: float | None = None) -> None:
        """Wait until every named service answers ``/readyz`` 200 (the handler: gRPC SERVING too)."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        pending = set(names)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while pending:
                for name in sorted(pending):
                    service = self.services[name]
                    if not service.running:
                        code = service.process.returncode if service.process is not None else None
                        raise StackError(
                            f"{name} exited with status {code} while starting; its log "
                            f"({service.log_path}):\n{service.log_tail()}"
                        )
                    if await self._is_ready(session, service):
                        pending.discard(name)
                if not pending:
                    return
                if time.monotonic() > deadline:
                    tails = "\n".join(
                        f"--- {n} ({self.services[n].log_path}):\n{self.services[n].log_tail(15)}"
                        for n in sorted(pending)
                    )
                    raise StackError(
                        f"not ready within {timeout or self.ready_timeout:g}s: {sorted(pending)}\n{tails}"
                    )
                await asyncio.sleep(0.1)

    async def _is_ready(self, session: aiohttp.ClientSession, service: ServiceProcess) -> bool:
        try:
            async with session.get(f"http://{service.host}:{service.http_port}/readyz") as resp:
                if resp.status != 200:
                    return False
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        if service.kind == "handler" and service.grpc_port:
            return await grpc_serving(f"{service.host}:{service.grpc_port}")
        return True

    # ------------------------------------------------------------------ chaos
    async def kill(self, name: str, *, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) to one service's process group and wait for it to exit."""
        service = self.service(name)
        proc = service.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        await _wait_exit(proc, timeout=self.stop_timeout)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await _wait_exit(proc, timeout=5.0)

    async def restart(self, name: str, *, wait: bool = True, kill_first: bool = True) -> None:
        """Start a service again with the same ports and arguments (SIGKILL it first if running)."""
        service = self.service(name)
        self._managed.add(name)
        try:
            if kill_first:
                await self.kill(name)
            elif service.running:
                raise StackError(f"{name} is still running")
            self._spawn(service)
            if wait:
                await self.wait_ready([name])
        finally:
            self._managed.discard(name)

    # ------------------------------------------------------------------ replicas
    async def add_replica(self, kind: str) -> str:
        """Start one more replica of ``kind``; return its name once it is ready.

        A handler or router replica joins its DNS name once ready, so callers' channels
        find it at their next re-resolution (the servers' connection age makes that
        happen within seconds). A new processor takes stream shards, sweeps and its share
        of the handlers' limits; behind the DNS name, the routers find it at their next
        re-resolution of the processors' name (every 5 s) and offer it its share (with
        fixed ports — one replica of each named kind — it gets no offers until they
        restart). A new connect has its own WebSocket URL.
        """
        if kind in ("handler", "router") and self.dns is None:
            raise StackError(f"start the stack with {kind}s >= 2 to add {kind} replicas (a DNS name)")
        taken = {self.services[n].name for n in self._names(kind)}
        index = next(i for i in range(1, 10_000) if (kind if i == 1 else f"{kind}-{i}") not in taken)
        service = self._replica(kind, index)
        self._managed.add(service.name)
        try:
            self._spawn(service)
            await self.wait_ready([service.name])
        except BaseException:
            await self.kill(service.name)
            del self.services[service.name]
            raise
        finally:
            self._managed.discard(service.name)
        self._publish(kind)
        return service.name

    async def remove_replica(self, name: str) -> None:
        """Take one replica out as Kubernetes does: out of its name first, then SIGTERM (drain)."""
        service = self.service(name)
        if len(self._names(service.kind)) < 2:
            raise StackError(f"{name} is the last {service.kind}")
        self._managed.add(name)
        try:
            self._publish(service.kind, without=name)
            proc = service.process
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                await _wait_exit(proc, timeout=self.stop_timeout)
            await self.kill(name)
            del self.services[name]
        finally:
            self._managed.discard(name)

    # ------------------------------------------------------------------ supervision
    def supervise(self, *, notify: Callable[[str], None]) -> None:
        """Restart any service that exits on its own, with backoff, as a kubelet would.

        ``notify`` gets one line per event (exit, restart, back). Off unless called:
        tests and chaos runs decide restarts themselves.
        """
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(notify), name="stack-supervisor")

    async def _supervise(self, notify: Callable[[str], None]) -> None:
        failures: dict[str, int] = {}
        up_since: dict[str, float] = {}
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for name, service in list(self.services.items()):
                if name in self._managed or name in self._restarts:
                    continue
                if service.running:
                    if failures.get(name) and now - up_since.get(name, now) >= RESTART_RESET_SECONDS:
                        failures[name] = 0
                    continue
                self._publish(service.kind)  # out of its name while down, as a pod that is not ready
                failures[name] = failures.get(name, 0) + 1
                delay = _RESTART_BACKOFF.delay(failures[name])
                code = service.process.returncode if service.process is not None else None
                notify(
                    f"{name} exited with status {code}; restarting in {delay:g} s (restart {failures[name]})"
                )
                self._restarts[name] = asyncio.create_task(self._restart_later(name, delay, notify, up_since))

    async def _restart_later(
        self, name: str, delay: float, notify: Callable[[str], None], up_since: dict[str, float]
    ) -> None:
        try:
            await asyncio.sleep(delay)
            service = self.services.get(name)
            if service is None or service.running or name in self._managed:
                return
            self._spawn(service)
            up_since[name] = time.monotonic()
            try:
                await self.wait_ready([name])
            except StackError as exc:
                notify(f"{name} did not come back: {str(exc).splitlines()[0]}")
                return
            self._publish(service.kind)
            notify(f"{name} is back (pid {service.pid})")
        finally:
            self._restarts.pop(name, None)

    # ------------------------------------------------------------------ stopping
    async def stop(self) -> None:
        """SIGTERM every service (connect first), SIGKILL stragglers, stop DynamoDB Local."""
        tasks = [t for t in (self._supervisor, *self._restarts.values()) if t is not None]
        self._supervisor = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._restarts.clear()
        order = [n for kind in ("connect", "processor", "router", "handler") for n in self._names(kind)]
        for name in order:
            proc = self.services[name].process
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name in order:
            proc = self.services[name].process
            if proc is None:
                continue
            await _wait_exit(proc, timeout=max(0.0, deadline - time.monotonic()))
        self._kill_services()
        if self.dns is not None:
            self.dns.stop()
        if self.dynamodb is not None:
            await asyncio.to_thread(self.dynamodb.stop)
            self.dynamodb = None
        for log in self._log_files:
            with contextlib.suppress(OSError):
                log.close()
        self._log_files.clear()
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None

    def kill_all(self) -> None:
        """SIGKILL every child's group and DynamoDB Local now (atexit, emergencies)."""
        self._kill_services()
        if self.dynamodb is not None:
            self.dynamodb.stop(kill=True)
            self.dynamodb = None

    def _kill_services(self) -> None:
        for service in self.services.values():
            proc = service.process
            if proc is None or proc.poll() is not None:
                continue  # never signal a reaped pid: it may belong to someone else by now
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def remove_run_dir(self) -> None:
        """Delete the run directory (logs, registry file) unless it was given by the caller."""
        if self.run_dir is not None and self._run_dir_arg is None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


async def _wait_exit(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Poll for the child's exit without blocking the loop (Popen.wait would)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a child, no event
        await asyncio.sleep(0.02)


async def grpc_serving(target: str, *, timeout: float = 1.0) -> bool:
    """Whether the gRPC server at ``target`` answers its health check with SERVING."""
    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from streamer import rpc

    channel = rpc.channel(target, peer="handler")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except aio.AioRpcError:
        return False
    finally:
        await channel.close(None)
