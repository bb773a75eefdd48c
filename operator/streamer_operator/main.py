"""``streamer operator``: run the StreamerHandler operator until SIGTERM.

Flags::

    streamer operator [--namespace NS ...] [--server URL]

Without ``--namespace`` (or ``STREAMER_NAMESPACE``) every namespace is watched.
``--server`` talks to an API server URL without credentials (``kubectl proxy``);
otherwise the in-cluster ServiceAccount is used, or the local kubeconfig.
``/healthz``, ``/readyz`` and ``/metrics`` are served on ``STREAMER_HTTP_PORT``;
``/healthz`` fails while kopf's watches get no answer from the API server
(:mod:`streamer_operator.watchdog`).
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from streamer.config import ConfigError, Settings, load_settings
from streamer.metrics import Health, start_http
from streamer.runtime import config_error, prepare
from streamer_operator.children import Ref
from streamer_operator.handlers import register
from streamer_operator.kube import ApiError, Kube
from streamer_operator.options import OperatorOptions, load_options
from streamer_operator.reconciler import Reconciler
from streamer_operator.tables import TablesGate
from streamer_operator.watchdog import WatchHealth

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
        settings=settings,
        manage=options.manage_tables,
        retry_seconds=options.tables_retry_seconds,
        recheck_seconds=options.resync_seconds,
    )
    reconciler = Reconciler(
        kube=Kube(api_client, field_manager=options.field_manager), tables=gate, options=options
    )
    register(registry, reconciler=reconciler, options=options)
    return registry, reconciler


def peering_args(options: OperatorOptions) -> dict[str, Any]:
    """kopf's peering arguments: standalone without a peering name; else that peering with
    this replica's priority (a random one unless set, so two replicas never tie: kopf
    freezes every operator of a tied priority, and pauses all but the highest)."""
    if not options.peering:
        return {"standalone": True, "peering_name": None, "priority": None}
    priority = options.priority or random.SystemRandom().randint(1, 1_000_000)
    return {"standalone": False, "peering_name": options.peering, "priority": priority}


KOPF_PEERINGS = Ref("kopf.dev", "v1", "kopfpeerings", "KopfPeering")


def ensure_peering(kube: Kube, name: str, namespaces: list[str]) -> None:
    """Create the peering object(s) the replicas meet at, if missing (kopf needs them)."""
    bodies: list[tuple[str, dict[str, Any]]] = []
    if namespaces:
        for ns in namespaces:
            path = KOPF_PEERINGS.path(ns)
            bodies.append(
                (
                    path,
                    {
                        "apiVersion": "kopf.dev/v1",
                        "kind": "KopfPeering",
                        "metadata": {"name": name, "namespace": ns},
                    },
                )
            )
    else:
        path = "/apis/kopf.dev/v1/clusterkopfpeerings"
        bodies.append(
            (path, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}})
        )
    for path, body in bodies:
        try:
            kube._call("POST", path, body=body, content_type="application/json")
        except ApiError as exc:
            if exc.status != 409:  # 409: it exists already
                log.warning("could not create the peering object", extra={"path": path, "error": str(exc)})


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
    watches = WatchHealth(stale_seconds=options.watch_stale_seconds)
    health.live_checks.append(watches.problem)
    runners: list[Any] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if args.server:
            return kopf.ConnectionInfo(server=args.server)
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def serve_health(**_: Any) -> None:
        watches.attach()  # kopf's loop: the watches started after the startup handlers
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
    peering = peering_args(options)
    if peering["peering_name"]:
        ensure_peering(Kube(api_client), options.peering, namespaces)
        log.info("peering", extra={"peering": options.peering, "priority": peering["priority"]})
    try:
        kopf.run(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            **peering,
        )
    finally:
        api_client.close()
    return 0
