"""The local-stack plumbing without processes: handler loading, tokens, stack planning, exit codes."""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import jwt
import pytest
import yaml

from streamer import protocol
from streamer.auth import TokenVerifier
from streamer.cli import main as cli_main
from streamer.cli import request as request_cli
from streamer.cli import token as token_cli
from streamer.client import error_from_message
from streamer.client.client import Progress, is_terminal
from streamer.config import load_settings
from streamer.local.devauth import DEV_JWT_SECRET, dev_token, jwt_secret
from streamer.local.stack import LocalStack, StackError, ready_line
from streamer.registry import parse_handler
from streamer.sdk import HandlerLoadError, load_actions


def test_handler_target_by_entry_point_name() -> None:
    name, actions = load_actions("examples")
    assert name == "examples"
    assert {a.name for a in actions} >= {"echo", "echo_async", "generate_report", "delay"}


def test_handler_target_by_module_function() -> None:
    name, actions = load_actions("examples.handlers:handlers")
    assert name == "examples" and len(actions) == len(load_actions("examples")[1])


def test_handler_target_by_module_collects_its_action_classes() -> None:
    name, actions = load_actions("examples.handlers.actions")
    assert name == "examples-handlers-actions"
    assert "echo" in {a.name for a in actions}


def test_unknown_handler_target_is_a_clear_error() -> None:
    with pytest.raises(HandlerLoadError, match=r"neither a streamer\.handlers entry point"):
        load_actions("no_such_module_anywhere")
    with pytest.raises(HandlerLoadError, match="no callable"):
        load_actions("examples.handlers:nothing_here")


def _parse(*argv: str) -> argparse.Namespace:
    parser, _ = cli_main.build_parser()
    return parser.parse_args(list(argv))


def test_a_handler_module_in_the_working_directory_is_found_by_the_console_script(
    tmp_path: pathlib.Path,
) -> None:
    # Found by hand: docs/handlers.md's `shop/handlers.py` next to where one types
    # `streamer dev --handler shop.handlers` was "neither an entry point nor an importable
    # module": a console script puts its bin/ directory on sys.path, not the working directory.
    (tmp_path / "shop_here.py").write_text(
        "from streamer.sdk import Action\n\n\n"
        "class Hi(Action):\n"
        "    name = 'hi_here'\n\n"
        "    async def process(self, request, progress):\n"
        "        return {}\n"
    )
    script = pathlib.Path(sys.executable).parent / "streamer"
    done = subprocess.run(
        [str(script), "handler", "shop_here", "--print-registry", "127.0.0.1:1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [a["name"] for a in yaml.safe_load(done.stdout)["spec"]["actions"]] == ["hi_here"]


def test_stack_refuses_an_unknown_handler_with_a_stack_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `streamer dev` reports a StackError in one line; anything else was a traceback.
    with pytest.raises(StackError, match=r"neither a streamer\.handlers entry point"):
        _planned(tmp_path, monkeypatch, handler="no_such_module_anywhere")


def test_the_try_it_hint_names_an_action_the_handler_serves(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With --handler of one's own, the hint said `streamer request echo`: INVALID_ACTION.
    from streamer.cli.dev import try_it_hint

    stack = _planned(tmp_path, monkeypatch, handler="examples.handlers.actions")
    assert "echo" in stack.action_names
    assert try_it_hint(stack.action_names).startswith("streamer request echo ")
    command, actions = try_it_hint(["quote", "export_orders"], "ws://h:1/ws").splitlines()
    assert command == "streamer request quote --payload '{...}' --url ws://h:1/ws"  # copy-pastable
    assert "export_orders" in actions


def test_every_local_subcommand_is_registered() -> None:
    _, modules = cli_main.build_parser()
    assert {"handler", "dev", "token", "request", "tables"} <= set(modules)


def test_token_uses_the_dev_secret_by_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMER_JWT_SECRET", raising=False)
    assert (
        token_cli.run(
            _parse("token", "--user", "u1", "--tenant", "t1", "--permissions", "a, b", "--ttl", "60")
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u1" and claims["tenant_id"] == "t1" and claims["permissions"] == ["a", "b"]
    assert claims["exp"] - claims["iat"] == 60


def test_token_prefers_the_configured_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_JWT_SECRET", "x" * 40)
    token_cli.run(_parse("token", "--user", "u", "--tenant", "t"))
    jwt.decode(capsys.readouterr().out.strip(), "x" * 40, algorithms=["HS256"])
    token_cli.run(_parse("token", "--user", "u", "--tenant", "t", "--secret", "y" * 40))
    jwt.decode(capsys.readouterr().out.strip(), "y" * 40, algorithms=["HS256"])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(dev_token(env={}), "x" * 40, algorithms=["HS256"])


async def test_dev_tokens_pass_the_gateways_verifier() -> None:
    verifier = TokenVerifier.from_settings(load_settings({}, jwt_secret=jwt_secret({})))
    identity = await verifier.verify(dev_token(user="alice", tenant="acme", permissions=["p"], env={}))
    assert (identity.user_id, identity.tenant_id, identity.permissions) == ("alice", "acme", ("p",))


def test_exit_codes_are_distinct_and_cover_every_error_code() -> None:
    assert set(request_cli.EXIT_CODES) == set(protocol.ERROR_CODES)
    values = list(request_cli.EXIT_CODES.values())
    assert len(set(values)) == len(values) and min(values) >= 10
    assert request_cli.exit_code("SOMETHING_NEW") == request_cli.EXIT_UNKNOWN_ERROR


def test_request_rejects_a_payload_that_is_not_an_object(capsys: pytest.CaptureFixture[str]) -> None:
    code = request_cli.run(_parse("request", "echo", "--payload", "[1, 2]", "--url", "ws://127.0.0.1:9/ws"))
    assert code == request_cli.EXIT_USAGE
    assert "must be a JSON object" in capsys.readouterr().err


def test_ready_line_is_exact() -> None:
    assert ready_line("ws://127.0.0.1:8080/ws") == "Streamer is ready: ws://127.0.0.1:8080/ws"


def _planned(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> LocalStack:
    stack = LocalStack(run_dir=tmp_path, **kw)  # type: ignore[arg-type]
    stack.run_dir = tmp_path
    (tmp_path / "logs").mkdir(exist_ok=True)
    stack.dynamodb_endpoint = "http://127.0.0.1:1"
    stack.env = stack._base_env()
    stack._plan()
    return stack


def test_stack_plan_wires_every_service_on_distinct_free_ports(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_WS_PORT", "1234")  # the stack owns ports: ignored
    monkeypatch.setenv("STREAMER_LOG_LEVEL", "DEBUG")  # other settings pass through
    monkeypatch.delenv("STREAMER_JWT_SECRET", raising=False)
    stack = _planned(tmp_path, monkeypatch, processors=2, connects=2)
    assert set(stack.services) == {"handler", "router", "processor", "processor-2", "connect", "connect-2"}
    ports = [p for s in stack.services.values() for p in (s.http_port, s.grpc_port, s.ws_port) if p]
    assert len(ports) == len(set(ports)) and 1234 not in ports
    router = stack.service("router")
    for name in ("connect", "connect-2"):
        assert f"127.0.0.1:{router.grpc_port}" in stack.service(name).argv
    assert all(s.env["STREAMER_LOG_LEVEL"] == "DEBUG" for s in stack.services.values())
    assert stack.dev_secret_used and stack.jwt_secret == DEV_JWT_SECRET
    docs = list(yaml.safe_load_all((tmp_path / "registry.yaml").read_text()))
    specs = parse_handler(docs[0])
    assert {s.endpoint for s in specs} == {f"127.0.0.1:{stack.service('handler').grpc_port}"}
    assert len(stack.ws_urls) == 2


def test_stack_keeps_a_configured_secret_and_applies_action_overrides(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_JWT_SECRET", "s" * 40)
    stack = _planned(tmp_path, monkeypatch, action_overrides={"generate_report": {"maxAttempts": 7}})
    assert not stack.dev_secret_used and stack.jwt_secret == "s" * 40
    doc = yaml.safe_load((tmp_path / "registry.yaml").read_text())
    entry = next(a for a in doc["spec"]["actions"] if a["name"] == "generate_report")
    assert entry["maxAttempts"] == 7
    with pytest.raises(StackError, match="does not serve"):
        _planned(tmp_path, monkeypatch, action_overrides={"nope": {"maxAttempts": 2}})


def test_terminal_messages_and_errors() -> None:
    assert is_terminal({"type": "complete"}) and is_terminal({"type": "response"})
    assert is_terminal({"type": "status", "status": "FAILED"})
    assert not is_terminal({"type": "status", "status": "PROCESSING"})
    assert not is_terminal({"type": "progress"})
    err = error_from_message(
        protocol.error_message(protocol.RATE_LIMITED, "slow down", request_id="r", details={"retry_after": 1})
    )
    assert (
        err.code == "RATE_LIMITED"
        and err.retryable
        and err.request_id == "r"
        and err.details == {"retry_after": 1}
    )
    p = Progress.from_message(
        {"type": "progress", "request_id": "r", "percentage": 40, "message": "m", "seq": 3}
    )
    assert (p.percentage, p.message, p.seq) == (40.0, "m", 3)
