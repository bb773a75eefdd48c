"""Settings from ``STREAMER_*`` environment variables, validated once at start.

Every service builds one :class:`Settings` with :func:`load_settings`; a bad value
raises :class:`ConfigError` naming the variable, and the service exits with that
message instead of failing later in the middle of a request. Command-line flags
override the environment by passing keyword overrides.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_ALGORITHMS = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of true/false/1/0/yes/no/on/off")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _parse_url(raw: str) -> str:
    value = raw.strip()
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


def _non_negative(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = kind(raw)
        if value < 0:  # type: ignore[operator]
            raise ValueError("must not be negative")
        return value

    return parse


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = kind(raw)
        if value <= 0:  # type: ignore[operator]
            raise ValueError("must be greater than 0")
        return value

    return parse


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number between 0 and 65535 (0 picks a free port)")
    return value


def _prefix(raw: str) -> str:
    if not _PREFIX_RE.match(raw):
        raise ValueError("must be 1-200 characters of letters, digits, '_', '.', '-'")
    return raw


def _algorithms(raw: str) -> tuple[str, ...]:
    algs = tuple(a.upper() for a in _parse_list(raw))
    bad = [a for a in algs if a not in _ALGORITHMS]
    if bad or not algs:
        raise ValueError(f"unsupported algorithm(s) {bad or raw!r}; choose from {sorted(_ALGORITHMS)}")
    return algs


def _issuer_urls(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _parse_list(raw):
        issuer, sep, url = item.rpartition("=")
        if not sep or not issuer:
            raise ValueError("expected issuer=url pairs separated by commas")
        pairs.append((issuer.strip(), _parse_url(url)))
    return tuple(pairs)


def _issuer_tenants(raw: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # JSON, not "a=b|c" pairs: issuers and tenant ids may contain any separator.
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError('expected a JSON object {"issuer": ["tenant", ...]}') from None
    if not isinstance(value, dict) or not all(
        isinstance(tenants, list) and tenants and all(isinstance(t, str) and t for t in tenants)
        for tenants in value.values()
    ):
        raise ValueError('expected a JSON object {"issuer": ["tenant", ...]} with non-empty lists')
    return tuple((str(iss), tuple(tenants)) for iss, tenants in value.items())


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in _LOG_LEVELS:
        raise ValueError(f"expected one of {sorted(_LOG_LEVELS)}")
    return value


def _text(raw: str) -> str:
    return raw


def _concurrency_scope(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("cluster", "processor"):
        raise ValueError("expected cluster or processor")
    return value


def _pem(raw: str) -> str:
    # Kubernetes secrets and env files often carry PEM keys with literal "\n".
    value = raw.replace("\\n", "\n").strip()
    if not value.startswith("-----BEGIN"):
        raise ValueError("expected a PEM-encoded public key (-----BEGIN PUBLIC KEY-----)")
    return value


#: The router RPCs a caller policy can grant ("*" grants every one).
CALLER_RPCS = ("Route", "Publish", "Submit")
#: Shortest secret accepted for signing service tokens (HS256 wants at least 256 bits).
MIN_SERVICE_SECRET_BYTES = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallerRule:
    """What one internal caller may do: router RPCs, for which tenants (``*``: any)."""

    name: str
    rpcs: tuple[str, ...]
    tenants: tuple[str, ...] = ("*",)


def _caller_policy(raw: str) -> tuple[CallerRule, ...]:
    """``{"billing": {"rpcs": ["Publish"], "tenants": ["acme"]}, "connect": {"rpcs": ["Route"]}}``."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"expected a JSON object of callers: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(
            'expected a JSON object, e.g. {"billing": {"rpcs": ["Publish"], "tenants": ["acme"]}}'
        )
    rules = []
    for name, spec in doc.items():
        if not name or not isinstance(spec, dict):
            raise ValueError(f"caller {name!r}: expected an object with rpcs (and tenants)")
        unknown = set(spec) - {"rpcs", "tenants"}
        if unknown:
            raise ValueError(f"caller {name!r}: unknown keys {sorted(unknown)} (rpcs, tenants)")
        rpcs, tenants = spec.get("rpcs"), spec.get("tenants", ["*"])
        for what, values in (("rpcs", rpcs), ("tenants", tenants)):
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise ValueError(f"caller {name!r}: {what} must be a list of names")
        assert isinstance(rpcs, list) and isinstance(tenants, list)
        bad = [r for r in rpcs if r != "*" and r not in CALLER_RPCS]
        if bad:
            raise ValueError(f"caller {name!r}: unknown rpcs {bad}; choose from {[*CALLER_RPCS, '*']}")
        rules.append(CallerRule(name=name, rpcs=tuple(rpcs), tenants=tuple(tenants)))
    return tuple(rules)


def _secret(raw: str) -> str:
    if len(raw.encode()) < MIN_SERVICE_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SERVICE_SECRET_BYTES} bytes")
    return raw


def _field(env: str, parse: Callable[[str], Any], default: Any, doc: str) -> Any:
    return dataclasses.field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of every service; each service reads the ones it needs."""

    # --- DynamoDB -------------------------------------------------------------
    dynamodb_endpoint: str | None = _field(
        "STREAMER_DYNAMODB_ENDPOINT", _parse_url, None, "DynamoDB endpoint URL; unset means AWS."
    )
    table_prefix: str = _field("STREAMER_TABLE_PREFIX", _prefix, "streamer", "Prefix of every table name.")
    aws_region: str = _field("AWS_REGION", _text, "us-east-1", "AWS region of the tables.")
    dynamodb_client: str = _field(
        "STREAMER_DYNAMODB_CLIENT",
        _one_of("lean", "botocore"),
        "lean",
        "Client of the item calls: `lean` (streamer.store.lean) or `botocore` (aiobotocore).",
    )

    # --- JWT ------------------------------------------------------------------
    jwt_secret: str | None = _field("STREAMER_JWT_SECRET", _text, None, "HS256 secret (development).")
    jwt_public_key: str | None = _field(
        "STREAMER_JWT_PUBLIC_KEY", _pem, None, "PEM public key (RS256/ES256)."
    )
    jwks_url: str | None = _field(
        "STREAMER_JWKS_URL", _parse_url, None, "JWKS URL (RS256/ES256); https:// (http:// to localhost only)."
    )
    jwks_urls: tuple[tuple[str, str], ...] = _field(
        "STREAMER_JWKS_URLS", _issuer_urls, (), "More issuers, each with its JWKS: iss=url,iss2=url2."
    )
    jwt_issuer: str | None = _field("STREAMER_JWT_ISSUER", _text, None, "Required `iss`, when set.")
    jwt_audience: str | None = _field(
        "STREAMER_JWT_AUDIENCE", _text, None, "Required `aud`, when set (a warning at start when not)."
    )
    jwt_algorithms: tuple[str, ...] | None = _field(
        "STREAMER_JWT_ALGORITHMS", _algorithms, None, "Accepted algorithms; default follows the key kind."
    )
    jwt_require_exp: bool = _field(
        "STREAMER_JWT_REQUIRE_EXP", _parse_bool, True, "Refuse tokens without `exp`."
    )
    jwt_leeway_seconds: float = _field(
        "STREAMER_JWT_LEEWAY_SECONDS", _non_negative(float), 30.0, "Clock skew allowed on exp/nbf/iat."
    )
    jwks_cache_seconds: float = _field(
        "STREAMER_JWKS_CACHE_SECONDS", _positive(float), 300.0, "How long fetched JWKS keys are kept."
    )
    allowed_tenants: tuple[str, ...] = _field(
        "STREAMER_ALLOWED_TENANTS", _parse_list, (), "Tenants allowed to connect; empty allows all."
    )
    jwt_issuer_tenants: tuple[tuple[str, tuple[str, ...]], ...] = _field(
        "STREAMER_JWT_ISSUER_TENANTS",
        _issuer_tenants,
        (),
        'Tenants each issuer may mint, JSON: {"https://idp-a": ["acme"], "https://idp-b": ["*"]}; '
        "required with several issuers.",
    )

    # --- network --------------------------------------------------------------
    host: str = _field("STREAMER_HOST", _text, "0.0.0.0", "Address every server binds.")
    ws_port: int = _field("STREAMER_WS_PORT", _port, 8080, "connect: WebSocket port.")
    grpc_port: int = _field("STREAMER_GRPC_PORT", _port, 50051, "gRPC port of this service.")
    http_port: int = _field("STREAMER_HTTP_PORT", _port, 9090, "/metrics, /healthz, /readyz port.")
    pod_ip: str | None = _field("POD_IP", _text, None, "This pod's IP; connect advertises POD_IP:grpc_port.")
    advertise_address: str | None = _field(
        "STREAMER_ADVERTISE_ADDRESS", _text, None, "host:port others use to reach this pod's gRPC server."
    )
    router_address: str = _field(
        "STREAMER_ROUTER_ADDRESS", _text, "127.0.0.1:50052", "router's gRPC address."
    )
    grpc_max_message_bytes: int = _field(
        "STREAMER_GRPC_MAX_MESSAGE_BYTES", _positive(int), 4 * 1024 * 1024, "gRPC message size cap."
    )
    grpc_max_connection_age_seconds: float = _field(
        "STREAMER_GRPC_MAX_CONNECTION_AGE_SECONDS",
        _non_negative(float),
        30.0,
        "Servers send GOAWAY after this (±10 %): clients re-resolve and find new pods. 0: never.",
    )
    grpc_max_connection_age_grace_seconds: float = _field(
        "STREAMER_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS",
        _non_negative(float),
        0.0,
        "Then calls still open get this long before the close; 0: until they end (long Invokes).",
    )

    tls_cert_file: str | None = _field(
        "STREAMER_TLS_CERT_FILE", _text, None, "PEM certificate for gRPC mTLS between the services."
    )
    tls_key_file: str | None = _field("STREAMER_TLS_KEY_FILE", _text, None, "PEM private key for gRPC mTLS.")
    tls_ca_file: str | None = _field(
        "STREAMER_TLS_CA_FILE", _text, None, "PEM CA bundle that peers' certificates must chain to."
    )
    tls_server_name: str | None = _field(
        "STREAMER_TLS_SERVER_NAME",
        _text,
        None,
        "Name checked in peers' certificates instead of their address.",
    )
    tls_handlers: bool = _field(
        "STREAMER_TLS_HANDLERS", _parse_bool, False, "Use mTLS to handler pods too (they must be configured)."
    )

    # --- internal callers (docs/backends.md) -------------------------------------
    service_token_secret: str | None = _field(
        "STREAMER_SERVICE_TOKEN_SECRET",
        _secret,
        None,
        "HS256 secret (32+ bytes) of service tokens: internal callers without mTLS sign theirs "
        "with it, the router verifies them.",
    )
    service_name: str | None = _field(
        "STREAMER_SERVICE_NAME",
        _text,
        None,
        "Caller name this process puts in its service tokens (default: the service's own name; "
        "backends must set it).",
    )
    service_token_seconds: float = _field(
        "STREAMER_SERVICE_TOKEN_SECONDS",
        _positive(float),
        300.0,
        "Lifetime of the service tokens this process signs; the router refuses longer-lived ones.",
    )
    caller_policy: tuple[CallerRule, ...] | None = _field(
        "STREAMER_CALLER_POLICY",
        _caller_policy,
        None,
        'Router RPCs and tenants per internal caller, JSON: {"billing": {"rpcs": ["Publish"], '
        '"tenants": ["acme"]}}; unset: every caller may call every RPC.',
    )

    # --- connect limits ---------------------------------------------------------
    ws_max_frame_bytes: int = _field(
        "STREAMER_WS_MAX_FRAME_BYTES", _positive(int), 128 * 1024, "Largest client frame answered normally."
    )
    ws_rate_limit: float = _field(
        "STREAMER_WS_RATE_LIMIT", _non_negative(float), 20.0, "Messages/s per connection; 0 turns it off."
    )
    ws_rate_burst: int = _field("STREAMER_WS_RATE_BURST", _positive(int), 40, "Token bucket size.")
    ws_rate_strikes: int = _field(
        "STREAMER_WS_RATE_STRIKES", _positive(int), 20, "RATE_LIMITED answers in a row before close 1008."
    )
    ws_send_queue: int = _field(
        "STREAMER_WS_SEND_QUEUE", _positive(int), 256, "Frames queued per connection before close 1013."
    )
    ws_send_queue_bytes: int = _field(
        "STREAMER_WS_SEND_QUEUE_BYTES",
        _positive(int),
        8 * 1024 * 1024,
        "Bytes (UTF-8) queued per connection before close 1013; a frame is always queued when "
        "nothing else is.",
    )
    ws_heartbeat_seconds: float = _field(
        "STREAMER_WS_HEARTBEAT_SECONDS", _positive(float), 30.0, "Server ping interval."
    )
    ws_missed_pongs: int = _field("STREAMER_WS_MISSED_PONGS", _positive(int), 2, "Missed pongs before close.")
    ws_route_timeout_seconds: float = _field(
        "STREAMER_WS_ROUTE_TIMEOUT_SECONDS", _positive(float), 35.0, "Deadline of one Route call."
    )
    ws_touch_seconds: float = _field(
        "STREAMER_WS_TOUCH_SECONDS", _positive(float), 60.0, "Least time between last-seen/TTL writes."
    )
    ws_reconnect_rate: float = _field(
        "STREAMER_WS_RECONNECT_RATE",
        _non_negative(float),
        200.0,
        "Sockets/s a drain spreads its clients' reconnects over (close-reason hint); 0: no hint.",
    )
    ws_reconnect_max_seconds: float = _field(
        "STREAMER_WS_RECONNECT_MAX_SECONDS",
        _positive(float),
        30.0,
        "Longest a drain asks a client to wait before reconnecting.",
    )
    drain_seconds: float = _field(
        "STREAMER_DRAIN_SECONDS", _positive(float), 20.0, "Grace period on SIGTERM."
    )

    # --- requests ---------------------------------------------------------------
    async_threshold_seconds: float = _field(
        "STREAMER_ASYNC_THRESHOLD_SECONDS", _non_negative(float), 5.0, "`auto` goes async above this."
    )
    registry_file: str | None = _field(
        "STREAMER_REGISTRY_FILE", _text, None, "YAML of StreamerHandler documents; unset watches Kubernetes."
    )
    namespace: str | None = _field("STREAMER_NAMESPACE", _text, None, "Namespace watched; unset means all.")

    # --- processor --------------------------------------------------------------
    poll_interval_seconds: float = _field(
        "STREAMER_POLL_INTERVAL_SECONDS", _positive(float), 0.05, "Wait after an empty GetRecords."
    )
    lease_seconds: float = _field("STREAMER_LEASE_SECONDS", _positive(float), 10.0, "Shard lease duration.")
    claim_seconds: float = _field("STREAMER_CLAIM_SECONDS", _positive(float), 15.0, "Request claim duration.")
    clock_skew_seconds: float = _field(
        "STREAMER_CLOCK_SKEW_SECONDS",
        _non_negative(float),
        1.0,
        "Clock skew between processors tolerated before a claim counts as expired.",
    )
    max_recoveries: int = _field(
        "STREAMER_MAX_RECOVERIES",
        _non_negative(int),
        3,
        "Times one request is recovered from a lapsed claim before it is FAILED.",
    )
    max_result_bytes: int = _field(
        "STREAMER_MAX_RESULT_BYTES",
        _positive(int),
        256 * 1024,
        "Largest async result (JSON bytes) stored; larger ones end RESULT_TOO_LARGE.",
    )
    sweep_interval_seconds: float = _field(
        "STREAMER_SWEEP_INTERVAL_SECONDS", _positive(float), 5.0, "How often the sweeper runs."
    )
    backlog_interval_seconds: float = _field(
        "STREAMER_BACKLOG_INTERVAL_SECONDS",
        _positive(float),
        10.0,
        "processor: how often it measures its queue's backlog per handler (one status-index "
        "query of the PENDING requests) for /metrics, where the operator's autoscaler reads it.",
    )
    pending_grace_seconds: float = _field(
        "STREAMER_PENDING_GRACE_SECONDS", _positive(float), 10.0, "PENDING age the sweeper re-dispatches."
    )
    offer_grace_seconds: float = _field(
        "STREAMER_OFFER_GRACE_SECONDS",
        _positive(float),
        2.0,
        "How long the stream reader leaves an offered request to the processor it was offered to.",
    )
    processor_addresses: tuple[str, ...] = _field(
        "STREAMER_PROCESSOR_ADDRESSES",
        _parse_list,
        (),
        "router: processors' gRPC host:port list for direct dispatch (a name may resolve to many and "
        "is re-resolved every 5 s; dns://server/name:port asks that DNS server; empty: stream only).",
    )
    progress_interval_seconds: float = _field(
        "STREAMER_PROGRESS_INTERVAL_SECONDS", _non_negative(float), 0.1, "Least time between progress frames."
    )
    handler_concurrency: int = _field(
        "STREAMER_HANDLER_CONCURRENCY", _positive(int), 64, "Default in-flight requests per handler."
    )
    handler_concurrency_scope: str = _field(
        "STREAMER_HANDLER_CONCURRENCY_SCOPE",
        _concurrency_scope,
        "cluster",
        "cluster: a handler's limit is shared by the live processors; processor: each gets all of it.",
    )
    retry_base_seconds: float = _field(
        "STREAMER_RETRY_BASE_SECONDS", _positive(float), 1.0, "First retry backoff; doubles per attempt."
    )
    retry_max_seconds: float = _field(
        "STREAMER_RETRY_MAX_SECONDS", _positive(float), 60.0, "Longest retry backoff."
    )
    worker_id: str | None = _field("STREAMER_WORKER_ID", _text, None, "Lease owner name; default host-pid.")
    requests_table: str | None = _field(
        "STREAMER_REQUESTS_TABLE",
        _prefix,
        None,
        "processor: the requests table (and its stream) to consume instead of <prefix>-requests: "
        "a dedicated handler's queue (the operator sets it on the handler's own processors).",
    )
    queue_handler: str | None = _field(
        "STREAMER_QUEUE_HANDLER",
        _text,
        None,
        "processor: namespace/name of the handler whose dedicated queue this processor consumes "
        "(logs and metrics); unset for the shared queue.",
    )

    # --- logs -------------------------------------------------------------------
    log_level: str = _field("STREAMER_LOG_LEVEL", _log_level, "INFO", "Log level.")
    log_json: bool = _field("STREAMER_LOG_JSON", _parse_bool, True, "JSON logs (false: plain text).")

    def table_name(self, kind: str) -> str:
        """The full name of one of the tables (connections, requests, subscriptions, leases).

        ``STREAMER_REQUESTS_TABLE`` replaces the requests table: a processor of a dedicated
        queue reads, claims and sweeps that table and nothing else changes for it.
        """
        if kind == "requests" and self.requests_table:
            return self.requests_table
        return f"{self.table_prefix}-{kind}"

    def grpc_advertise(self) -> str:
        """The address this pod's gRPC server is reachable at, for connection records."""
        if self.advertise_address:
            return self.advertise_address
        host = self.pod_ip or ("127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host)
        return f"{host}:{self.grpc_port}"


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for docs and ``--help``."""
    rows = []
    for f in dataclasses.fields(Settings):
        rows.append((f.metadata["env"], repr(f.default), f.metadata["doc"]))
    return rows


def load_settings(env: Mapping[str, str] | None = None, /, **overrides: Any) -> Settings:
    """Read settings from ``env`` (default ``os.environ``); ``overrides`` win over it.

    Overrides with the value ``None`` are ignored, so CLI flags can be passed through
    unconditionally. Raises :class:`ConfigError` naming the first bad variable.
    """
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        var = f.metadata["env"]
        if overrides.get(f.name) is not None:
            value = overrides.pop(f.name)
            if isinstance(value, str | int | float):
                # Flags go through the same parser as the variable they override.
                try:
                    value = f.metadata["parse"](str(value).lower() if isinstance(value, bool) else str(value))
                except (ValueError, TypeError) as exc:
                    raise ConfigError(var, f"invalid value {_redact(var, str(value))}: {exc}") from None
            values[f.name] = value
            continue
        overrides.pop(f.name, None)
        raw = source.get(var)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[f.name] = f.metadata["parse"](raw.strip() if f.name != "jwt_secret" else raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(var, f"invalid value {_redact(var, raw)}: {exc}") from None
    if overrides:
        raise TypeError(f"unknown settings: {sorted(overrides)}")
    settings = Settings(**values)
    if settings.ws_rate_limit and settings.ws_rate_burst < 1:
        raise ConfigError("STREAMER_WS_RATE_BURST", "must be at least 1 when a rate limit is set")
    return settings


def _redact(var: str, raw: str) -> str:
    if "SECRET" in var or "KEY" in var:
        return "(redacted)"
    return repr(raw if len(raw) <= 80 else raw[:77] + "...")
