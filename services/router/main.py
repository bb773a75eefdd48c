"""``streamer router``: the router service (gRPC Router plus /metrics /healthz /readyz).

Handlers come from ``--registry``/``STREAMER_REGISTRY_FILE`` (a YAML file of
StreamerHandler documents) or, when neither is set, from a watch of the cluster's
Ready StreamerHandler resources. Signals, drain and exit codes: :mod:`streamer.runtime`.
"""

from __future__ import annotations

import argparse

from services.router.service import RouterService, default_port
from streamer.config import Settings, load_settings
from streamer.registry import make_registry
from streamer.runtime import run_service


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamer router", description="Run the router service.")
    p.add_argument("--host", help="address to bind (STREAMER_HOST, default 0.0.0.0)")
    p.add_argument(
        "--port", type=int, help="gRPC port (STREAMER_GRPC_PORT, else the port of STREAMER_ROUTER_ADDRESS)"
    )
    p.add_argument(
        "--http-port", type=int, help="/metrics /healthz /readyz port (STREAMER_HTTP_PORT, default 9090)"
    )
    p.add_argument("--registry", help="YAML file of StreamerHandler documents (STREAMER_REGISTRY_FILE)")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(host=args.host, http_port=args.http_port, registry_file=args.registry)


def _build(settings: Settings, args: argparse.Namespace) -> RouterService:
    return RouterService(
        settings=settings,
        registry=make_registry(settings),
        host=settings.host,
        port=args.port if args.port is not None else default_port(settings),
        http_port=settings.http_port,
    )


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``streamer router``; returns the exit code."""
    return run_service("router", argv, parser=build_parser(), settings=_settings, build=_build)
