"""``streamer request`` and ``streamer token`` as a user runs them, against the real stack."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pathlib
import re
import sys
import uuid

from e2e_helpers import eventually

from streamer.cli.request import EXIT_CODES, EXIT_USAGE
from streamer.local.devauth import DEV_TENANT
from streamer.local.ports import free_port
from streamer.local.stack import LocalStack
from streamer.store import CANCELLED, Store, request_key

REPORT = {"start_date": "2026-01-01", "end_date": "2026-01-31", "format": "pdf", "report_type": "sales"}


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str


async def streamer(stack: LocalStack, *args: str, env: dict[str, str] | None = None) -> Run:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    full_env.update({"STREAMER_URL": stack.ws_url, "STREAMER_JWT_SECRET": stack.jwt_secret or ""})
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer.cli.main",
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_exit_status_per_outcome(stack: LocalStack) -> None:
    unused = free_port()
    runs = await asyncio.gather(
        streamer(stack, "request", "echo", "--payload", '{"message": "hi"}'),
        streamer(
            stack,
            "request",
            "generate_report",
            "--payload",
            json.dumps({**REPORT, "start_date": "2026-02-30"}),
        ),
        streamer(stack, "request", "no_such_action"),
        streamer(stack, "request", "echo", "--payload", '{"message": "x"}', "--token", "not-a-token"),
        streamer(stack, "request", "echo", "--payload", "{}", "--url", f"ws://127.0.0.1:{unused}/ws"),
        streamer(stack, "request", "echo", "--payload", "{not json"),
    )
    ok, invalid, unknown, unauthorized, unreachable, usage = runs
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["message"] == "hi"
    assert invalid.code == EXIT_CODES["VALIDATION_ERROR"] and "VALIDATION_ERROR" in invalid.err
    assert invalid.out == ""
    assert unknown.code == EXIT_CODES["INVALID_ACTION"] and "INVALID_ACTION" in unknown.err
    assert unauthorized.code == EXIT_CODES["UNAUTHORIZED"] and "UNAUTHORIZED" in unauthorized.err
    assert unreachable.code == EXIT_CODES["SERVICE_UNAVAILABLE"] and "SERVICE_UNAVAILABLE" in unreachable.err
    assert usage.code == EXIT_USAGE


async def test_async_request_shows_progress_and_prints_the_result(stack: LocalStack) -> None:
    run = await streamer(stack, "request", "generate_report", "--payload", json.dumps(REPORT))
    assert run.code == 0, run.err
    assert json.loads(run.out)["report_type"] == "sales"
    # Not a terminal: plain progress lines on stderr, ending at 100 %.
    lines = [line for line in run.err.splitlines() if line.startswith("[")]
    assert lines and lines[-1].startswith("[100%]")


async def test_json_mode_prints_every_message_as_one_line(stack: LocalStack) -> None:
    run = await streamer(
        stack, "request", "echo_async", "--payload", '{"message": "m"}', "--json", "--id", "cli-json-1"
    )
    assert run.code == 0, run.err
    messages = [json.loads(line) for line in run.out.splitlines()]
    assert messages[0]["type"] == "acknowledgment"
    assert messages[-1]["type"] == "complete" and messages[-1]["result"]["message"] == "m"
    assert {m["request_id"] for m in messages} == {"cli-json-1"}
    assert any(m["type"] == "progress" for m in messages)


async def test_timeout_exits_18_and_cancels_the_request(stack: LocalStack) -> None:
    request_id = f"cli-timeout-{uuid.uuid4().hex[:8]}"
    run = await streamer(
        stack,
        "request",
        "delay",
        "--payload",
        '{"seconds": 30, "steps": 30}',
        "--timeout",
        "2",
        "--id",
        request_id,
    )
    assert run.code == EXIT_CODES["TIMEOUT"], run.err
    # It said "the request may still be running on the server" right after cancelling it.
    assert "TIMEOUT: No result within 2s; the request was cancelled on the server" in run.err

    async def cancelled() -> bool:
        async with Store.open(settings=stack.settings) as store:
            record = await store.requests.get(request_key(DEV_TENANT, request_id))
        return record is not None and record.status == CANCELLED

    await eventually(cancelled, timeout=30)


async def test_token_command_makes_a_token_the_stack_accepts(stack: LocalStack) -> None:
    token_run = await streamer(stack, "token", "--user", "carol", "--tenant", "acme", "--permissions", "a,b")
    assert token_run.code == 0, token_run.err
    token = token_run.out.strip()
    assert token.count(".") == 2
    # With a wrong secret around, only the given token can be what gets in.
    wrong = "w" * 40
    explicit, from_env = await asyncio.gather(
        streamer(
            stack,
            "request",
            "echo",
            "-p",
            '{"message": "t"}',
            "--token",
            token,
            env={"STREAMER_JWT_SECRET": wrong},
        ),
        # STREAMER_TOKEN is the default token.
        streamer(
            stack,
            "request",
            "echo",
            "-p",
            '{"message": "t"}',
            env={"STREAMER_TOKEN": token, "STREAMER_JWT_SECRET": wrong},
        ),
    )
    assert explicit.code == 0, explicit.err
    assert from_env.code == 0, from_env.err


async def test_the_python_client_example_of_client_md_runs_as_written(stack: LocalStack) -> None:
    # A newcomer copies docs/client.md's first example: it used a `token` it never defined.
    text = (pathlib.Path(__file__).parents[2] / "docs" / "client.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    assert "ws://127.0.0.1:8080/ws" in example
    code = example.replace("ws://127.0.0.1:8080/ws", stack.ws_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env["STREAMER_JWT_SECRET"] = stack.jwt_secret or ""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert "'message': 'hi'" in lines[0]
    assert any(line.strip().startswith("100%") for line in lines)
    assert lines[-1].startswith("VALIDATION_ERROR ")
