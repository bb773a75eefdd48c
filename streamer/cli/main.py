"""``streamer <subcommand>``: the one console script (DESIGN §5).

Service subcommands (``connect``, ``router``, ``processor``, ``operator``) are found
through the ``streamer.services`` entry points, so this library never imports a
service (the layering contract) while the image still has one entrypoint. Other
subcommands live in modules of this package, each with ``add_parser`` and ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from streamer.config import ConfigError
from streamer.local.parent import die_with_parent_from_env

SERVICES = ("connect", "router", "processor", "operator")
#: subcommand -> module in this package with add_parser(subparsers) and run(args) -> int
LOCAL_COMMANDS = {
    "handler": "streamer.cli.handler",
    "dev": "streamer.cli.dev",
    "token": "streamer.cli.token",
    "request": "streamer.cli.request",
    "publish": "streamer.cli.publish",
    "submit": "streamer.cli.submit",
    "tables": "streamer.cli.tables",
}


def service_runner(name: str) -> Callable[[list[str] | None], int]:
    """The ``run(argv)`` of a service, from the ``streamer.services`` entry points."""
    for ep in entry_points(group="streamer.services"):
        if ep.name == name:
            try:
                return ep.load()  # type: ignore[no-any-return]
            except ImportError as exc:
                raise SystemExit(
                    f"streamer {name}: the server parts are not installed ({exc.name or exc}); "
                    "pip install 'streamer[server]'"
                ) from None
    raise SystemExit(f"streamer: service {name!r} is not installed (entry point streamer.services:{name})")


def version() -> str:
    """The installed distribution's version (the package's own when run from a bare checkout)."""
    try:
        return importlib.metadata.version("streamer")
    except importlib.metadata.PackageNotFoundError:
        from streamer import __version__

        return __version__


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Streamer: long-running requests over one WebSocket, with live progress.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SERVICES:
        sub.add_parser(
            name, help=f"run the {name} service (flags after it go to the service)", add_help=False
        )
    modules: dict[str, Any] = {}
    for name, module_name in LOCAL_COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # e.g. `dev` without the server extra
            continue
        module.add_parser(sub)
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent_from_env()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in SERVICES:
        try:
            return service_runner(args_list[0])(args_list[1:])
        except ConfigError as exc:
            print(f"streamer {args_list[0]}: configuration error: {exc}", file=sys.stderr)
            return 2
    parser, modules = build_parser()
    args = parser.parse_args(args_list)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args))
    except ConfigError as exc:
        print(f"streamer {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
