"""``streamer operator``: run the StreamerHandler operator until SIGTERM.

Flags::

    streamer operator [--namespace NS ...] [--server URL]

Without ``--namespace`` (or ``STREAMER_NAMESPACE``) every namespace is watched.
``--server`` talks to an API server URL without credentials (``kubectl proxy``);
otherwise the in-cluster ServiceAccount is used, or the local kubeconfig.
``/healthz``, ``/readyz`` and ``/metrics`` are served on ``STREAMER_HTTP_PORT``.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from streamer.config import ConfigError, Settings, load_settings
from streamer.metrics import Health, start_http
from streamer.runtime import config_error, prepare
from streamer_operator.handlers import register
from streamer_operator.kube import Kube
from streamer_operator.options import OperatorOptions, load_options
from streamer_operator.reconciler import Reconciler
from streamer_operator.tables import TablesGate

log = logging.getLogger(__name__)


def build(
    *,
    settings: Settings,
    options: OperatorOptions,
    api_client: k8s.ApiClient | None = None,
    tables: TablesGate | None = None,
    registry: kopf.OperatorRegistry | None = None,
) -> tuple[kopf.OperatorRegistry, Reconciler]:
    """A registry with every operator handler on it, and the reconciler behind them."""
    registry = registry or kopf.OperatorRegistry()
    gate = tables or TablesGate(
        settings=settings, manage=options.manage_tables, retry_seconds=options.tables_retry_seconds
    )
    reconciler = Reconciler(
        kube=Kube(api_client, field_manager=options.field_manager), tables=gate, options=options
    )
    register(registry, reconciler=reconciler, options=options)
    return registry, reconciler


def _api_client(server: str | None) -> k8s.ApiClient:
    if server:
        configuration = k8s.Configuration()
        configuration.host = server
        return k8s.ApiClient(configuration)
    try:
        k8s_config.load_incluster_config()  # re-reads the rotating token by itself
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer operator", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: STREAMER_NAMESPACE, else all",
    )
    parser.add_argument("--server", help="API server URL to use without credentials (e.g. kubectl proxy)")
    return parser


def run(
    argv: list[str] | None = None,
    *,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> int:
    """Run the operator; returns the exit code. ``stop_flag`` stops it from another thread.

    Flags, settings, logging and exit codes as every service (:mod:`streamer.runtime`);
    kopf runs its own event loop and signal handling.
    """
    prepared = prepare(
        "operator", argv, parser=build_parser(), settings=lambda _: load_settings(), grpc=False
    )
    if isinstance(prepared, int):
        return prepared
    args, settings = prepared
    try:
        options = load_options()
    except ConfigError as exc:
        return config_error("operator", exc)
    api_client = _api_client(args.server)
    registry, _ = build(settings=settings, options=options, api_client=api_client)
    health = Health()
    runners: list[Any] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if args.server:
            return kopf.ConnectionInfo(server=args.server)
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def serve_health(**_: Any) -> None:
        runner, port = await start_http(health=health, host=settings.host, port=settings.http_port)
        runners.append(runner)
        health.set_ready()
        log.info("operator started", extra={"http_port": port})

    @kopf.on.cleanup(registry=registry)
    async def stop_health(**_: Any) -> None:
        health.set_not_ready("stopping")
        for runner in runners:
            await runner.cleanup()

    namespaces = list(args.namespace) or ([settings.namespace] if settings.namespace else [])
    try:
        kopf.run(
            registry=registry,
            standalone=True,  # one replica (Recreate strategy): no peering objects needed
            clusterwide=not namespaces,
            namespaces=namespaces,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        api_client.close()
    return 0
