"""The Python client is a light install: ``pip install streamer`` pulls aiohttp, PyJWT and rich;
the services, the operator and the local stack are the ``server`` extra.

The import check runs in a child interpreter where every server-side library fails to import,
as it would in a user's environment with the base install only.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib

from installlib import run_without

import streamer

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: Importable names of what only the server extra (or dev) installs.
SERVER_MODULES = (
    "boto3",
    "botocore",
    "aiobotocore",
    "grpc",
    "grpc_tools",
    "grpc_health",
    "grpc_reflection",
    "google.protobuf",
    "kopf",
    "kubernetes",
    "prometheus_client",
    "jsonschema",
    "yaml",
    "uvloop",
    "dnslib",
    "opentelemetry",
)


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!;~ ]", requirement, maxsplit=1)[0].lower()


def test_the_base_install_is_the_client_and_the_server_parts_are_an_extra() -> None:
    assert {_name(r) for r in PROJECT["dependencies"]} == {"aiohttp", "pyjwt", "rich"}
    server = {_name(r) for r in PROJECT["optional-dependencies"]["server"]}
    assert {"boto3", "aiobotocore", "grpcio", "kopf", "kubernetes", "jsonschema", "pyyaml"} <= server
    assert "grpcio-tools" not in server  # generating code is a development step
    assert "streamer[server]" in PROJECT["optional-dependencies"]["dev"]  # CI's .[dev,bench] has it all
    assert (ROOT / "streamer" / "py.typed").exists()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("'.[server]'") == 2


def test_the_client_and_its_commands_work_without_the_server_parts() -> None:
    run = run_without(
        SERVER_MODULES,
        """
        import streamer.client, streamer.protocol
        from streamer.client import StreamerClient, ValidationError
        from streamer.cli.main import main
        assert main(["token", "--user", "ann", "--tenant", "acme"]) == 0
        try:
            main(["connect"])
        except SystemExit as exc:
            print("CONNECT:", exc)
        try:
            main(["--version"])
        except SystemExit:
            pass
        print("LEAKED:", leaked())
        """,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].count(".") == 2  # the token
    assert "pip install 'streamer[server]'" in next(x for x in lines if x.startswith("CONNECT:"))
    assert f"streamer {streamer.__version__}" in lines
    assert "LEAKED: []" in lines


def test_streamer_version() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "streamer.cli.main", "--version"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and run.stdout.strip() == f"streamer {streamer.__version__}"
