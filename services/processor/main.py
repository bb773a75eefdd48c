"""``streamer processor``: consume the requests stream until SIGTERM/SIGINT, then drain.

Handlers come from ``--registry``/``STREAMER_REGISTRY_FILE`` (a YAML file of
StreamerHandler documents) or, when neither is set, from a watch of the cluster's
Ready StreamerHandler resources. ``/metrics``, ``/healthz`` and ``/readyz`` are
served on ``--http-port``/``STREAMER_HTTP_PORT``.

On SIGTERM the processor stops reading and releases its shard leases (another
replica reads on at once), hands queued requests back, lets running handlers
finish for ``STREAMER_DRAIN_SECONDS``, then cancels the rest and hands them back
(PENDING at the same attempt). See :mod:`services.processor.service`; signals and
exit codes (0 clean, 2 configuration, 1 anything else): :mod:`streamer.runtime`.
"""

from __future__ import annotations

import argparse

from services.processor.service import ProcessorService
from streamer.config import Settings, load_settings
from streamer.registry import make_registry
from streamer.runtime import run_service


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer processor",
        description="The DynamoDB Streams consumer that runs async requests. "
        "Every setting also comes from STREAMER_* variables; flags win.",
    )
    parser.add_argument("--http-port", type=int, help="/metrics, /healthz, /readyz port (STREAMER_HTTP_PORT)")
    parser.add_argument(
        "--grpc-port", type=int, help="Processor.Offer port for direct dispatch (STREAMER_GRPC_PORT)"
    )
    parser.add_argument("--registry", help="YAML file of StreamerHandler documents (STREAMER_REGISTRY_FILE)")
    parser.add_argument("--worker-id", help="lease owner name (STREAMER_WORKER_ID; default host-pid-random)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        registry_file=args.registry,
        worker_id=args.worker_id,
    )


def _build(settings: Settings, args: argparse.Namespace) -> ProcessorService:
    return ProcessorService(settings=settings, registry=make_registry(settings))


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``streamer processor`` and ``python -m services.processor``."""
    return run_service("processor", argv, parser=build_parser(), settings=_settings, build=_build)
