"""Settings: defaults, parsing, overrides, and errors that name the variable."""

from __future__ import annotations

import pytest

from streamer.config import ConfigError, describe, load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert s.table_prefix == "streamer" and s.table_name("leases") == "streamer-leases"
    assert s.dynamodb_endpoint is None and s.aws_region == "us-east-1"
    assert s.jwt_require_exp and s.ws_rate_limit == 20 and s.async_threshold_seconds == 5


def test_environment_and_overrides() -> None:
    env = {
        "STREAMER_DYNAMODB_ENDPOINT": "http://127.0.0.1:8000/",
        "STREAMER_TABLE_PREFIX": "dev",
        "STREAMER_WS_RATE_LIMIT": "0",
        "STREAMER_JWT_REQUIRE_EXP": "false",
        "STREAMER_ALLOWED_TENANTS": "a, b,,",
        "STREAMER_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\\nabc\\n-----END PUBLIC KEY-----",
        "AWS_REGION": "eu-west-1",
        "STREAMER_LOG_LEVEL": "debug",
    }
    s = load_settings(env, table_prefix="override", ws_port=None)
    assert s.dynamodb_endpoint == "http://127.0.0.1:8000"
    assert s.table_prefix == "override"
    assert s.ws_rate_limit == 0 and not s.jwt_require_exp
    assert s.allowed_tenants == ("a", "b")
    assert s.jwt_public_key is not None and "\n" in s.jwt_public_key
    assert s.aws_region == "eu-west-1" and s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("STREAMER_DYNAMODB_ENDPOINT", "localhost:8000"),
        ("STREAMER_TABLE_PREFIX", "bad prefix!"),
        ("STREAMER_WS_RATE_LIMIT", "fast"),
        ("STREAMER_WS_RATE_LIMIT", "-1"),
        ("STREAMER_WS_MAX_FRAME_BYTES", "0"),
        ("STREAMER_WS_PORT", "70000"),
        ("STREAMER_JWT_REQUIRE_EXP", "maybe"),
        ("STREAMER_JWT_ALGORITHMS", "none"),
        ("STREAMER_JWT_PUBLIC_KEY", "not a pem"),
        ("STREAMER_JWKS_URL", "ftp://x"),
        ("STREAMER_LOG_LEVEL", "loud"),
    ],
)
def test_bad_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({var: value})
    assert err.value.variable == var
    assert str(err.value).startswith(var)


def test_secrets_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"STREAMER_JWT_PUBLIC_KEY": "super-secret-value"})
    assert "super-secret-value" not in str(err.value)


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        load_settings({}, no_such_setting=1)


def test_advertise_address() -> None:
    assert (
        load_settings({"POD_IP": "10.1.2.3", "STREAMER_GRPC_PORT": "7000"}).grpc_advertise()
        == "10.1.2.3:7000"
    )
    assert load_settings({}).grpc_advertise() == "127.0.0.1:50051"
    assert load_settings({"STREAMER_ADVERTISE_ADDRESS": "h:1"}).grpc_advertise() == "h:1"


def test_every_setting_is_documented() -> None:
    rows = describe()
    assert all(var.startswith(("STREAMER_", "AWS_", "POD_")) and doc for var, _, doc in rows)
    assert len({var for var, _, _ in rows}) == len(rows)


def test_jwks_urls_pairs() -> None:
    s = load_settings({"STREAMER_JWKS_URLS": "https://a.example=https://a.example/jwks, b=http://b/keys"})
    assert s.jwks_urls == (("https://a.example", "https://a.example/jwks"), ("b", "http://b/keys"))
    with pytest.raises(ConfigError) as err:
        load_settings({"STREAMER_JWKS_URLS": "no-url-here"})
    assert err.value.variable == "STREAMER_JWKS_URLS"


def test_configuration_doc_is_current() -> None:
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[3]
    spec = importlib.util.spec_from_file_location("genconfigdoc", root / "scripts" / "genconfigdoc.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (root / "docs" / "configuration.md").read_text() == mod.render(), "run scripts/genconfigdoc.py"


def test_overrides_are_validated_like_the_variable() -> None:
    assert load_settings({}, ws_port=9000, ws_rate_limit=0).ws_port == 9000
    with pytest.raises(ConfigError) as err:
        load_settings({}, ws_port=70000)
    assert err.value.variable == "STREAMER_WS_PORT"
    with pytest.raises(ConfigError):
        load_settings({}, dynamodb_endpoint="not a url")
