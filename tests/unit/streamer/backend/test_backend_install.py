"""A backend needs the ``backend`` extra only (gRPC, protobuf, prometheus-client): the SDK and
``streamer publish``/``submit`` work with every other server-side library unimportable."""

from __future__ import annotations

import pathlib
import re
import tomllib

from installlib import run_without

ROOT = pathlib.Path(__file__).resolve().parents[4]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
#: What the server extra installs beyond the backend extra, as importable names.
NOT_FOR_BACKENDS = ("boto3", "botocore", "aiobotocore", "kopf", "kubernetes", "jsonschema", "yaml", "uvloop")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!;~ ]", requirement, maxsplit=1)[0].lower()


def test_the_backend_extra_is_part_of_the_server_extra() -> None:
    backend = {_name(r) for r in EXTRAS["backend"]}
    assert backend == {
        "grpcio",
        "grpcio-health-checking",
        "grpcio-reflection",
        "protobuf",
        "prometheus-client",
    }
    assert backend <= {_name(r) for r in EXTRAS["server"]}


def test_the_sdk_and_the_commands_work_with_the_backend_extra_alone() -> None:
    run = run_without(
        NOT_FOR_BACKENDS,
        """
        from streamer.backend import AsyncBackend, Backend
        from streamer.cli.main import main
        # Nothing listens on port 1: the command reaches the point of calling, and says so.
        code = main(["publish", "{}", "--tenant", "acme", "--router", "127.0.0.1:1", "--timeout", "2"])
        print("EXIT:", code)
        print("LEAKED:", leaked())
        """,
    )
    assert run.returncode == 0, run.stderr
    assert "EXIT: 21" in run.stdout.splitlines(), run.stdout + run.stderr
    assert "LEAKED: []" in run.stdout.splitlines()
