"""``streamer dev``: the whole product on this machine, until Ctrl-C.

Starts a :class:`~streamer.local.stack.LocalStack` (DynamoDB Local unless
``--dynamodb-endpoint``, the tables, connect, router, processor and the example
handlers, each its own process on loopback) and, once everything is healthy, prints on
stdout the ready line and then the demo page's address (:mod:`streamer.local.page`,
unless ``--no-page``)::

    Streamer is ready: ws://127.0.0.1:8080/ws
    Demo page: http://127.0.0.1:41234/

Everything else (where the logs are, how to get a token) goes to stderr, so scripts
can wait for the ready line. Ctrl-C or SIGTERM stops every process; exit status 0 after a
clean stop, 1 when the stack could not start, 2 for a bad flag or setting.

Like a kubelet, it restarts a service that exits on its own, with backoff (0.5 s,
doubling to 30 s), and says so on stderr; ``--exit-on-failure`` stops everything
instead. ``--replicas connect=2,router=2,processor=3,handler=3`` runs several of each;
handlers, routers and processors then sit behind DNS names, as behind headless Services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from typing import Any

from streamer.config import ConfigError, load_settings
from streamer.local.devauth import DEV_TENANT, DEV_USER
from streamer.local.dynamodb import DynamoDBLocalError
from streamer.local.page import DemoPage
from streamer.local.stack import LocalStack, StackError, ready_line

DEFAULT_WS_PORT = 8080
PAGE_LINE = "Demo page: "


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dev",
        help="run the local stack (DynamoDB Local, every service, the example handlers)",
        description="Run the whole product on loopback until Ctrl-C. Every internal port is picked free.",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"WebSocket port (default: STREAMER_WS_PORT, else {DEFAULT_WS_PORT}; 0 picks a free one)",
    )
    p.add_argument("--dynamodb-endpoint", help="use this DynamoDB instead of starting DynamoDB Local")
    p.add_argument("--table-prefix", help="table name prefix (default: STREAMER_TABLE_PREFIX or 'streamer')")
    p.add_argument("--processors", type=int, default=None, help="processor processes (default 1)")
    p.add_argument("--connects", type=int, default=None, help="connect processes (default 1)")
    p.add_argument(
        "--replicas",
        type=parse_replicas,
        default={},
        metavar="KIND=N,...",
        help="replicas per service, e.g. connect=2,router=2,processor=3,handler=3 (default 1 each)",
    )
    p.add_argument(
        "--exit-on-failure",
        action="store_true",
        help="stop everything when a service exits (default: restart it with backoff)",
    )
    p.add_argument("--handler", default="examples", help="what `streamer handler` serves (default: examples)")
    p.add_argument(
        "--dedicated",
        default="",
        metavar="ACTION[,ACTION...]",
        help="serve these actions from a dedicated queue: their own requests table, stream and processor",
    )
    p.add_argument("--run-dir", help="directory for logs and the registry file (default: a new temp dir)")
    p.add_argument("-v", "--verbose", action="store_true", help="service logs to stderr instead of files")
    p.add_argument("--page-port", type=int, default=0, help="port of the demo page (default: a free one)")
    p.add_argument("--no-page", action="store_true", help="do not serve the demo page")


KINDS = ("connect", "router", "processor", "handler")


def parse_replicas(text: str) -> dict[str, int]:
    """``connect=2,router=2`` → ``{"connect": 2, "router": 2}`` (argparse type)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, count = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise argparse.ArgumentTypeError(f"expected KIND=N with KIND one of {', '.join(KINDS)}: {part!r}")
        try:
            n = int(count)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind}: expected a whole number, got {count!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{kind}: at least 1 replica")
        out[kind] = n
    return out


def replica_counts(args: argparse.Namespace) -> dict[str, int]:
    """Replicas per kind from ``--replicas`` and the older ``--processors``/``--connects``."""
    counts = dict.fromkeys(KINDS, 1)
    counts.update(args.replicas)
    if args.processors is not None:
        counts["processor"] = args.processors
    if args.connects is not None:
        counts["connect"] = args.connects
    return counts


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def try_it_hint(action_names: list[str], url: str | None = None) -> str:
    """The command to try first: the examples' echo, else one of the actions actually served.

    (With ``--handler`` of one's own, suggesting ``echo`` only earned an ``INVALID_ACTION``.)
    """
    where = f" --url {url}" if url else ""
    if "echo" in action_names:
        return f'streamer request echo --payload \'{{"message": "hello"}}\'{where}'
    first = action_names[0] if action_names else "ACTION"
    listed = ", ".join(action_names)
    return f"streamer request {first} --payload '{{...}}'{where}\n                (actions: {listed})"


def _info(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = load_settings(dynamodb_endpoint=args.dynamodb_endpoint, table_prefix=args.table_prefix)
    port = args.port if args.port is not None else settings.ws_port  # STREAMER_WS_PORT, else 8080
    if port and not _port_free(port):
        _info(
            f"streamer dev: port {port} is in use (another `streamer dev`?); pick one with --port, 0 for any"
        )
        return 1
    counts = replica_counts(args)
    stack = LocalStack(
        ws_port=port or None,
        dynamodb_endpoint=settings.dynamodb_endpoint,
        table_prefix=settings.table_prefix,
        processors=counts["processor"],
        connects=counts["connect"],
        routers=counts["router"],
        handlers=counts["handler"],
        handler=args.handler,
        dedicated=[a.strip() for a in args.dedicated.split(",") if a.strip()],
        run_dir=args.run_dir,
        log_to_stderr=args.verbose,
    )
    page: DemoPage | None = None
    starting = asyncio.ensure_future(stack.start())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            _info("streamer dev: interrupted while starting; stopping")
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            await stack.stop()
            return 130
        try:
            starting.result()
        except (StackError, DynamoDBLocalError) as exc:
            _info(f"streamer dev: could not start the stack: {exc}")
            if stack.run_dir is not None:
                _info(f"streamer dev: logs are in {stack.run_dir / 'logs'}")
            return 1
        if stack.run_dir is not None:
            where = "stderr" if args.verbose else str(stack.run_dir / "logs")
            _info(f"Run dir: {stack.run_dir} (service logs: {where})")
        _info(f"DynamoDB: {stack.dynamodb_endpoint} (tables prefixed {stack.table_prefix!r})")
        for name, service in stack.services.items():
            grpc = f"  grpc :{service.grpc_port}" if service.grpc_port else ""
            _info(f"  {name:<12} pid {service.pid!s:<8} http :{service.http_port}{grpc}")
        if stack.dev_secret_used:
            _info(
                "Auth: the public development JWT secret is in use (set STREAMER_JWT_SECRET to change it).\n"
                f"  Get a token:  streamer token --user {DEV_USER} --tenant {DEV_TENANT}\n"
                "  Try it:       "
                + try_it_hint(stack.action_names, stack.ws_url if port != DEFAULT_WS_PORT else None)
            )
        router = stack.services.get("router")
        if router is not None and router.grpc_address:
            _info(
                f"Backends: the router is at {router.grpc_address}; try\n"
                f'  streamer publish \'{{"text": "hi"}}\' --user {DEV_USER} --tenant {DEV_TENANT}'
                f" --router {router.grpc_address}   (docs/backends.md)"
            )
        for url in stack.ws_urls[1:]:
            _info(f"Also listening: {url}")
        page_url = None
        if not args.no_page:
            page = DemoPage(
                ws_urls=stack.ws_urls,
                registry_file=stack.registry_file,
                # Development tokens only where the stack signs HS256 itself, as `streamer token`.
                token_maker=stack.token if stack.jwt_secret else None,
                port=args.page_port,
            )
            try:
                page_url = await page.start()
            except OSError as exc:
                _info(f"streamer dev: the demo page could not start ({exc}); the stack runs without it")
        print(ready_line(stack.ws_url), flush=True)
        if page_url is not None:
            print(f"{PAGE_LINE}{page_url}", flush=True)
        if not args.exit_on_failure:
            stack.supervise(notify=lambda line: _info(f"streamer dev: {line}"))
        # Stay up until a signal; with --exit-on-failure, also until a service dies on its own.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopper), timeout=1.0)
            dead = [n for n, s in stack.services.items() if not s.running]
            if dead and args.exit_on_failure and not stop.is_set():
                _info(f"streamer dev: {', '.join(dead)} exited unexpectedly; stopping everything")
                for name in dead:
                    _info(f"--- last lines of {name}:\n{stack.services[name].log_tail(20)}")
                await stack.stop()
                return 1
        _info("streamer dev: stopping")
        await stack.stop()
        _info("streamer dev: stopped")
        return 0
    finally:
        stopper.cancel()
        if not starting.done():
            starting.cancel()
        if page is not None:
            await page.stop()
        await stack.stop()


def run(args: argparse.Namespace) -> int:
    if min(replica_counts(args).values()) < 1:
        print("streamer dev: --processors and --connects must be at least 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"streamer dev: configuration error: {exc}", file=sys.stderr)
        return 2
