"""The chart's ValidatingAdmissionPolicy, evaluated: its CEL allows and refuses what it should.

The policy rendered by helm is run through a CEL evaluator (cel-python) the way the API
server runs it: each of ``spec.variables`` in order, then each validation's expression and
messageExpression, with ``object`` the StreamerHandler and ``request.namespace`` its
namespace. Kubernetes' list and string extension functions that the policy uses
(``flatten``, ``join``) are given here with their documented meaning. Each case is also
checked against the operator's own enforcement (``streamer_operator.policy``) with the
allow- and deny-lists the chart gives it, so the two gates cannot drift apart.

What this does not check: the API server's type checker and cost limits (a real API
server is not part of this test suite); the expressions are standard CEL plus those two
extension functions, both in Kubernetes 1.30+.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from celpy import celtypes
from chart_render import NAMESPACE, RELEASE, Render, by_kind, name
from streamer_operator import policy
from streamer_operator.options import load_options

SETS = [
    "operator.allowedSecrets={handler-*,team-a/shared}",
    "operator.allowedServiceAccounts={runner,team-a/builder}",
    "jwt.secret=x",
]


def _flatten(value: Any) -> celtypes.ListType:
    out: list[Any] = []
    for item in value:
        out.extend(item)
    return celtypes.ListType(out)


def _join(value: Any, sep: Any = celtypes.StringType("")) -> celtypes.StringType:
    return celtypes.StringType(str(sep).join(str(item) for item in value))


FUNCTIONS = {"flatten": _flatten, "join": _join}


class Policy:
    """The rendered ValidatingAdmissionPolicy, compiled once."""

    def __init__(self, doc: dict[str, Any]) -> None:
        env = celpy.Environment()
        self.variables = [
            (v["name"], env.program(env.compile(v["expression"]), functions=FUNCTIONS))
            for v in doc["spec"]["variables"]
        ]
        self.validations = [
            (
                env.program(env.compile(v["expression"]), functions=FUNCTIONS),
                env.program(env.compile(v["messageExpression"]), functions=FUNCTIONS),
            )
            for v in doc["spec"]["validations"]
        ]

    def evaluate(self, obj: dict[str, Any], namespace: str) -> list[str]:
        """The messages of the failed validations (empty: admitted)."""
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(obj),
            "request": celpy.json_to_cel({"namespace": namespace}),
        }
        values: dict[str, Any] = {}
        for var_name, program in self.variables:
            activation["variables"] = celtypes.MapType({celtypes.StringType(k): v for k, v in values.items()})
            result = program.evaluate(activation)
            assert not isinstance(result, celpy.CELEvalError), (var_name, result)
            values[var_name] = result
        activation["variables"] = celtypes.MapType({celtypes.StringType(k): v for k, v in values.items()})
        failed = []
        for check, message in self.validations:
            ok = check.evaluate(activation)
            assert isinstance(ok, celtypes.BoolType), ok
            if not ok:
                failed.append(str(message.evaluate(activation)))
        return failed


@pytest.fixture(scope="module")
def rendered(render: Render) -> tuple[Policy, Any]:
    docs = render(sets=SETS)
    (doc,) = by_kind(docs, "ValidatingAdmissionPolicy").values()
    (op,) = by_kind(docs, "Deployment")[name("operator")]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in op["env"] if "value" in e}
    return Policy(doc), load_options(env)


def handler(namespace: str = NAMESPACE, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "streamer.dev/v1alpha1",
        "kind": "StreamerHandler",
        "metadata": {"name": "h", "namespace": namespace},
        "spec": {"image": "img", "actions": [{"name": "a"}], **spec},
    }


def secret_env(secret: str) -> dict[str, Any]:
    return {"name": "X", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}


JWT = f"{RELEASE}-streamer-jwt"
ALLOWED = {
    "minimal": handler(),
    "env secret by glob": handler(env=[secret_env("handler-db"), {"name": "PLAIN", "value": "1"}]),
    "everything allowed": handler(
        serviceAccountName="runner",
        env=[secret_env("handler-db")],
        template={
            "spec": {
                "imagePullSecrets": [{"name": "handler-pull"}],
                "volumes": [
                    {"name": "v", "secret": {"secretName": "handler-files"}},
                    {
                        "name": "p",
                        "projected": {
                            "sources": [{"secret": {"name": "handler-p"}}, {"configMap": {"name": "c"}}]
                        },
                    },
                    {"name": "e", "emptyDir": {}},
                ],
                "containers": [{"name": "side", "envFrom": [{"secretRef": {"name": "handler-side"}}]}],
                "initContainers": [{"name": "init", "env": [secret_env("handler-init")]}],
            }
        },
    ),
    "namespaced glob in its namespace": handler(
        "team-a", env=[secret_env("shared")], serviceAccountName="builder"
    ),
}
FORBIDDEN = {
    "the release's JWT secret": (handler(env=[secret_env(JWT)]), JWT),
    "a secret outside the list": (handler(env=[secret_env("payments-db")]), "payments-db"),
    "an image pull secret": (
        handler(template={"spec": {"imagePullSecrets": [{"name": "regcred"}]}}),
        "regcred",
    ),
    "a secret volume": (
        handler(template={"spec": {"volumes": [{"name": "v", "secret": {"secretName": "tls-key"}}]}}),
        "tls-key",
    ),
    "a projected secret": (
        handler(
            template={
                "spec": {"volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "proj"}}]}}]}
            }
        ),
        "proj",
    ),
    "a CSI volume's publish secret": (
        handler(
            template={
                "spec": {
                    "volumes": [
                        {"name": "c", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-creds"}}}
                    ]
                }
            }
        ),
        "csi-creds",
    ),
    "a sidecar's envFrom": (
        handler(
            template={"spec": {"containers": [{"name": "s", "envFrom": [{"secretRef": {"name": "side"}}]}]}}
        ),
        "side",
    ),
    "an init container's env": (
        handler(template={"spec": {"initContainers": [{"name": "i", "env": [secret_env("init-only")]}]}}),
        "init-only",
    ),
    "a namespaced glob in another namespace": (handler("team-b", env=[secret_env("shared")]), "shared"),
    "the processor's account": (handler(serviceAccountName=f"{name('processor')}"), name("processor")),
    "an account outside the list": (handler(serviceAccountName="admin"), "admin"),
    "an account in the pod template": (handler(template={"spec": {"serviceAccountName": "admin"}}), "admin"),
    "the deprecated serviceAccount field": (handler(template={"spec": {"serviceAccount": "admin"}}), "admin"),
}


def _operator_refuses(options: Any, body: dict[str, Any]) -> str | None:
    return policy.violations(
        body,
        allowed_secrets=options.allowed_secrets,
        denied_secrets=options.denied_secrets,
        allowed_service_accounts=options.allowed_service_accounts,
        denied_service_accounts=options.denied_service_accounts,
    )


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_the_policy_admits_what_the_lists_allow(rendered: tuple[Policy, Any], case: str) -> None:
    cel, options = rendered
    body = ALLOWED[case]
    assert cel.evaluate(body, body["metadata"]["namespace"]) == []
    assert _operator_refuses(options, body) is None


@pytest.mark.parametrize("case", sorted(FORBIDDEN))
def test_the_policy_refuses_the_rest_and_names_it(rendered: tuple[Policy, Any], case: str) -> None:
    cel, options = rendered
    body, culprit = FORBIDDEN[case]
    failed = cel.evaluate(body, body["metadata"]["namespace"])
    assert len(failed) == 1 and culprit in failed[0], failed
    refused = _operator_refuses(options, body)
    assert refused is not None and culprit in refused


def test_the_release_own_secret_and_accounts_are_refused_even_under_a_wildcard(render: Render) -> None:
    docs = render(sets=["operator.allowedSecrets={*}", "operator.allowedServiceAccounts={*}", "jwt.secret=x"])
    (doc,) = by_kind(docs, "ValidatingAdmissionPolicy").values()
    cel = Policy(doc)
    assert (
        cel.evaluate(handler(env=[secret_env("payments-db")], serviceAccountName="anyone"), NAMESPACE) == []
    )
    (jwt,) = cel.evaluate(handler(env=[secret_env(JWT)]), NAMESPACE)
    assert JWT in jwt
    (account,) = cel.evaluate(handler(serviceAccountName=name("processor")), NAMESPACE)
    assert name("processor") in account
    # The same names in another namespace are someone else's.
    assert cel.evaluate(handler("team-b", env=[secret_env(JWT)]), "team-b") == []
