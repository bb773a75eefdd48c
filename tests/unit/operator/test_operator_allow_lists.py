"""Allow-lists for the Secrets and ServiceAccounts a StreamerHandler may use."""

from __future__ import annotations

from typing import Any

from streamer_operator import policy
from streamer_operator.options import load_options


def body(**spec: Any) -> dict[str, Any]:
    return {
        "kind": "StreamerHandler",
        "metadata": {"name": "h", "namespace": "team"},
        "spec": {"image": "i", "actions": [{"name": "a"}], **spec},
    }


EVERYWHERE = body(
    serviceAccountName="handler-sa",
    env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
    template={
        "spec": {
            "serviceAccountName": "other-sa",
            "imagePullSecrets": [{"name": "regcred"}],
            "volumes": [
                {"name": "v", "secret": {"secretName": "vol-secret"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "projected-secret"}}]}},
                {"name": "c", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}},
            ],
            "containers": [
                {"name": "side", "envFrom": [{"secretRef": {"name": "envfrom-secret"}}]},
                {
                    "name": "handler",
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret"}}}],
                },
            ],
            "initContainers": [
                {
                    "name": "init",
                    "env": [{"name": "Y", "valueFrom": {"secretKeyRef": {"name": "init-secret"}}}],
                }
            ],
        }
    },
)


def test_every_secret_and_service_account_reference_is_found() -> None:
    assert policy.secret_refs(EVERYWHERE["spec"]) == [
        "env-secret",
        "regcred",
        "envfrom-secret",
        "init-secret",
        "vol-secret",
        "projected-secret",
        "csi-secret",
    ]
    assert policy.service_account_refs(EVERYWHERE["spec"]) == ["handler-sa", "other-sa"]


def test_allow_lists_globs_and_denials() -> None:
    def check(**kw: Any) -> str | None:
        args: dict[str, Any] = {"allowed_secrets": (), "allowed_service_accounts": ()}
        args.update(kw)
        return policy.violations(EVERYWHERE, **args)

    nothing = check() or ""
    assert "Secret 'vol-secret' is not in the operator's allow-list" in nothing
    assert "ServiceAccount 'handler-sa' is not in the operator's allow-list" in nothing
    assert check(allowed_secrets=("*",), allowed_service_accounts=("*",)) is None
    assert check(allowed_secrets=("*-secret", "regcred"), allowed_service_accounts=("team/*",)) is None
    assert check(allowed_secrets=("*",), allowed_service_accounts=("other/*",)) is not None
    reserved = check(allowed_secrets=("*",), denied_secrets=("vol-secret",), allowed_service_accounts=("*",))
    assert reserved == "Secret 'vol-secret' is reserved for Streamer itself"
    plain = body()
    assert policy.violations(plain, allowed_secrets=(), allowed_service_accounts=()) is None


def test_options_from_the_environment() -> None:
    assert load_options({}).allowed_secrets == ("*",)  # by hand: as before
    opts = load_options(
        {
            "STREAMER_OPERATOR_ALLOWED_SECRETS": "",
            "STREAMER_OPERATOR_ALLOWED_SERVICE_ACCOUNTS": "handler-*, ns/sa",
            "STREAMER_OPERATOR_DENIED_SECRETS": "jwt",
        }
    )
    assert opts.allowed_secrets == ()
    assert opts.allowed_service_accounts == ("handler-*", "ns/sa")
    assert opts.denied_secrets == ("jwt",)


def test_peering_options() -> None:
    import pytest
    from streamer_operator.main import peering_args

    from streamer.config import ConfigError

    alone = load_options({})
    assert peering_args(alone) == {"standalone": True, "peering_name": None, "priority": None}
    peers = load_options({"STREAMER_OPERATOR_PEERING": "streamer"})
    first, second = peering_args(peers), peering_args(peers)
    assert first["standalone"] is False and first["peering_name"] == "streamer"
    assert 1 <= first["priority"] <= 1_000_000  # random: two replicas (almost) never tie
    assert {first["priority"], second["priority"]} != {0}
    fixed = load_options({"STREAMER_OPERATOR_PEERING": "streamer", "STREAMER_OPERATOR_PRIORITY": "7"})
    assert peering_args(fixed)["priority"] == 7
    with pytest.raises(ConfigError):
        load_options({"STREAMER_OPERATOR_PRIORITY": "high"})
