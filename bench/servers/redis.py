"""A throw-away redis-server on a free loopback port (no persistence), for the peer stack."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess

from bench.procs import LOGS
from streamer.local.ports import free_port


class RedisServer:
    def __init__(self, *, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, *, timeout: float = 15.0) -> RedisServer:
        LOGS.mkdir(parents=True, exist_ok=True)
        with (LOGS / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - non-blocking spawn
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode} (see {LOGS / 'redis.log'})"
                )
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 1)
                writer.close()
                if line.startswith(b"+PONG"):
                    return self
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout}s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
