"""The operator's own settings (``STREAMER_OPERATOR_*``), next to the shared ``Settings``.

They are read and checked once at start, like every other Streamer setting: a bad
value stops the operator with a :class:`streamer.config.ConfigError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from streamer.config import ConfigError

FIELD_MANAGER = "streamer-operator"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorOptions:
    """How often to re-check everything, and whether to manage the DynamoDB tables."""

    # A safety net only: child events and CR changes reconcile at once. The resync also
    # lets a handler that lost an action conflict take over once the winner is gone.
    resync_seconds: float = 60.0
    # How often a handler with backlog autoscaling is re-read and re-scaled.
    autoscale_seconds: float = 15.0
    # kopf peering: with a name, several operator replicas run and only the one with the
    # highest priority is active (the others pause until it is gone); empty = standalone.
    peering: str = ""
    # This replica's priority; 0 picks a random one at start, so two replicas never tie
    # (kopf freezes every operator of a tied priority).
    priority: int = 0
    manage_tables: bool = True
    # /healthz fails once a list or watch request of kopf has had no answer this long
    # (retries included): the watches are dead. See streamer_operator.watchdog.
    watch_stale_seconds: float = 30.0
    tables_retry_seconds: float = 15.0
    field_manager: str = FIELD_MANAGER
    # Globs (``name`` or ``namespace/name``) of the Secrets and ServiceAccounts handler
    # pods may use; a deny always wins. See streamer_operator.policy.
    allowed_secrets: tuple[str, ...] = ("*",)
    denied_secrets: tuple[str, ...] = ()
    allowed_service_accounts: tuple[str, ...] = ("*",)
    denied_service_accounts: tuple[str, ...] = ()
    # The dedicated queues' processor Deployments: the Streamer image, and where their
    # settings come from (the chart's ConfigMap and AWS Secret, its processor account).
    processor_image: str = "streamer:latest"
    processor_config_map: str = ""
    processor_secret: str = ""
    processor_service_account: str = ""
    # Extra labels of those processor pods (the chart's NetworkPolicies let pods labelled
    # as its processors reach connect's gRPC port): "key=value,key=value".
    processor_pod_labels: tuple[tuple[str, str], ...] = ()
    # Where the shared queue's processors run (found by processor_pod_labels there): the
    # backlog autoscaler reads their /metrics (streamer_operator.scrape). Empty: it
    # queries the shared table itself.
    processor_namespace: str = ""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _positive(env: Mapping[str, str], var: str, default: float) -> float:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(var, f"invalid value {raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ConfigError(var, f"invalid value {raw!r}: must be greater than 0")
    return value


def _globs(env: Mapping[str, str], var: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list; unset keeps ``default``, set but empty means none."""
    if var not in env:
        return default
    return tuple(item.strip() for item in env[var].split(",") if item.strip())


def _priority(env: Mapping[str, str]) -> int:
    raw = env.get("STREAMER_OPERATOR_PRIORITY", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            "STREAMER_OPERATOR_PRIORITY", f"invalid value {raw!r}: expected an integer"
        ) from None
    if value < 0:
        raise ConfigError("STREAMER_OPERATOR_PRIORITY", f"invalid value {raw!r}: must not be negative")
    return value


def _labels(env: Mapping[str, str], var: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in _globs(env, var, ()):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(var, f"invalid value {item!r}: expected key=value pairs separated by commas")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def load_options(env: Mapping[str, str] | None = None) -> OperatorOptions:
    """Options from ``env`` (default ``os.environ``)."""
    source = os.environ if env is None else env
    manage_raw = source.get("STREAMER_OPERATOR_MANAGE_TABLES", "").strip().lower()
    if manage_raw and manage_raw not in _TRUE | _FALSE:
        raise ConfigError(
            "STREAMER_OPERATOR_MANAGE_TABLES", f"invalid value {manage_raw!r}: expected true or false"
        )
    return OperatorOptions(
        resync_seconds=_positive(source, "STREAMER_OPERATOR_RESYNC_SECONDS", 60.0),
        autoscale_seconds=_positive(source, "STREAMER_OPERATOR_AUTOSCALE_SECONDS", 15.0),
        peering=source.get("STREAMER_OPERATOR_PEERING", "").strip(),
        priority=_priority(source),
        manage_tables=manage_raw not in _FALSE,
        tables_retry_seconds=_positive(source, "STREAMER_OPERATOR_TABLES_RETRY_SECONDS", 15.0),
        watch_stale_seconds=_positive(source, "STREAMER_OPERATOR_WATCH_STALE_SECONDS", 30.0),
        # Unset: anything (the operator run by hand, as before); the chart always sets them.
        allowed_secrets=_globs(source, "STREAMER_OPERATOR_ALLOWED_SECRETS", ("*",)),
        denied_secrets=_globs(source, "STREAMER_OPERATOR_DENIED_SECRETS", ()),
        allowed_service_accounts=_globs(source, "STREAMER_OPERATOR_ALLOWED_SERVICE_ACCOUNTS", ("*",)),
        denied_service_accounts=_globs(source, "STREAMER_OPERATOR_DENIED_SERVICE_ACCOUNTS", ()),
        processor_image=source.get("STREAMER_OPERATOR_PROCESSOR_IMAGE", "").strip() or "streamer:latest",
        processor_config_map=source.get("STREAMER_OPERATOR_PROCESSOR_CONFIGMAP", "").strip(),
        processor_secret=source.get("STREAMER_OPERATOR_PROCESSOR_SECRET", "").strip(),
        processor_service_account=source.get("STREAMER_OPERATOR_PROCESSOR_SERVICE_ACCOUNT", "").strip(),
        processor_pod_labels=_labels(source, "STREAMER_OPERATOR_PROCESSOR_POD_LABELS"),
        processor_namespace=source.get("STREAMER_OPERATOR_PROCESSOR_NAMESPACE", "").strip(),
    )
