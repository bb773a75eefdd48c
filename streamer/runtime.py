"""The one way a Streamer service process runs: flags and settings, TLS, logging, uvloop,
signals, drain and exit codes.

Each service has a short ``main.py`` that calls :func:`run_service` with its parser,
how its flags become :class:`~streamer.config.Settings`, and how to build its service
object (``services/<name>/service.py``), which only has to ``start()`` and ``stop()``:

1. flags are parsed (``--help`` exits 0, a bad flag 2);
2. settings are loaded, TLS and the service token (:mod:`streamer.callers`) configured —
   a :class:`~streamer.config.ConfigError` prints ``streamer <name>: configuration
   error: …`` (naming the variable) and exits 2;
3. JSON (or text) logs for the service are set up, and tracing when the ``OTEL_*``
   variables ask for it (:mod:`streamer.tracing`);
4. the service is built and started on uvloop; a :class:`ConfigError` or
   :class:`~streamer.registry.RegistryError` while building or starting exits 2;
5. SIGTERM or SIGINT → ``stop()``, which drains within ``STREAMER_DRAIN_SECONDS``
   (each service's own policy); exit 0. Anything else that stops the service is
   logged and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

from streamer import callers, rpc, tracing
from streamer.config import ConfigError, Settings
from streamer.logs import setup_logging
from streamer.registry import RegistryError

log = logging.getLogger(__name__)

#: Exit codes of every service process.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Service(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> Any: ...


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (Linux images), else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


async def serve(service: Service, *, name: str, drain_seconds: float) -> int:
    """Start ``service``, wait for SIGTERM/SIGINT, then stop (drain) it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        await stop.wait()
        log.info("stop signal received; draining", extra={"drain_seconds": drain_seconds})
    finally:
        await service.stop()
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    log.info("%s stopped", name)
    return EXIT_OK


def config_error(name: str, exc: ConfigError) -> int:
    """Print a configuration error (it names the variable); the exit code to return."""
    print(f"streamer {name}: configuration error: {exc}", file=sys.stderr)
    return EXIT_CONFIG


def prepare(
    name: str,
    argv: list[str] | None,
    *,
    parser: argparse.ArgumentParser,
    settings: Callable[[argparse.Namespace], Settings],
    grpc: bool = True,
) -> tuple[argparse.Namespace, Settings] | int:
    """Steps 1 to 3 of the module doc: the flags and settings, or the exit code to return."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, message already printed)
        return int(exc.code or 0)
    try:
        loaded = settings(args)
        if grpc:
            rpc.configure(loaded)
            callers.configure_service_token(loaded, default_name=name)
    except ConfigError as exc:
        return config_error(name, exc)
    setup_logging(service=name, level=loaded.log_level, json_format=loaded.log_json)
    tracing.setup(name)  # off unless the OTEL_* variables ask for it (streamer/tracing.py)
    return args, loaded


def run_service(
    name: str,
    argv: list[str] | None,
    *,
    parser: argparse.ArgumentParser,
    settings: Callable[[argparse.Namespace], Settings],
    build: Callable[[Settings, argparse.Namespace], Service],
) -> int:
    """Run one service process to the end; returns its exit code (see the module doc)."""
    prepared = prepare(name, argv, parser=parser, settings=settings)
    if isinstance(prepared, int):
        return prepared
    args, loaded = prepared
    try:
        service = build(loaded, args)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(serve(service, name=name, drain_seconds=loaded.drain_seconds))
    except ConfigError as exc:
        return config_error(name, exc)
    except RegistryError as exc:
        print(f"streamer {name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled inside
        return EXIT_OK
    except Exception:
        log.exception("%s failed", name)
        return EXIT_FAILED


__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "Service",
    "config_error",
    "event_loop_factory",
    "prepare",
    "run_service",
    "serve",
]
