"""Who is calling an internal gRPC service, and may they? (docs/backends.md, docs/security.md)

**Identity.** A caller is named by its mTLS client certificate when the call came over
mutual TLS (every name in it: the subject's common name and each subject alternative
name, e.g. ``billing`` or ``spiffe://cluster.local/ns/apps/sa/billing``), otherwise by a
**service token**: a short-lived HS256 JWT in the ``authorization: Bearer`` metadata,
signed with ``STREAMER_SERVICE_TOKEN_SECRET``, whose ``sub`` is the caller's name
(``STREAMER_SERVICE_NAME``), ``aud`` is :data:`AUDIENCE`, and whose lifetime (``exp`` -
``iat``) is at most ``STREAMER_SERVICE_TOKEN_SECONDS``. A token that is present but not
valid is refused (``UNAUTHENTICATED``) whatever the policy; no certificate and no token
is an anonymous caller.

**Policy.** ``STREAMER_CALLER_POLICY`` grants each caller name router RPCs (``Route``,
``Publish``, ``Submit`` or ``*``) for tenants (``*``: any). With a policy, a call is
allowed only when one of the caller's names is granted that RPC for the tenant the
call concerns; otherwise it is ``PERMISSION_DENIED`` and counted in
``streamer_router_calls_refused_total{caller,rpc,reason}``. Without a policy every
caller may call everything (the development stack, and a cluster that relies on
NetworkPolicies alone) — the router says so in a warning at start.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence

import grpc
import jwt
from grpc import aio

from streamer.config import CallerRule, ConfigError, Settings
from streamer.metrics import counter

log = logging.getLogger(__name__)

#: The ``aud`` of every service token: a user's JWT, even one signed with the same
#: secret by mistake, is never a service token.
AUDIENCE = "streamer-internal"
ALGORITHM = "HS256"
#: Clock skew allowed when checking a service token's times.
LEEWAY_SECONDS = 30.0
#: Label of a caller that presented nothing.
ANONYMOUS = "anonymous"
#: Verified service tokens the router remembers (a few per caller are live at a time).
VERIFIED_CACHE_SIZE = 1024

REFUSED = counter(
    "streamer_router_calls_refused_total",
    "Internal calls the router refused, by caller (its first name, or anonymous), RPC and reason "
    "(unauthenticated: a bad service token; not_allowed: the caller policy).",
    ["caller", "rpc", "reason"],
)


class Unauthenticated(Exception):
    """A service token was presented but is not valid (gRPC ``UNAUTHENTICATED``)."""


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who called: every name they proved, and how (``mtls``, ``token`` or ``none``)."""

    names: tuple[str, ...]
    via: str

    @property
    def label(self) -> str:
        """The metric and log name: the first proven name, or ``anonymous``."""
        return self.names[0][:64] if self.names else ANONYMOUS


# --------------------------------------------------------------------------- tokens
class ServiceToken:
    """Signs this process's service tokens, re-signing one shortly before it expires."""

    def __init__(self, *, secret: str, name: str, lifetime: float = 300.0) -> None:
        self.secret = secret
        self.name = name
        self.lifetime = lifetime
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            claims = {"sub": self.name, "aud": AUDIENCE, "iat": int(now), "exp": int(now + self.lifetime)}
            self._token = jwt.encode(claims, self.secret, algorithm=ALGORITHM)
            self._renew_at = now + self.lifetime / 2
        return self._token

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The gRPC call metadata that carries the token."""
        return (("authorization", f"Bearer {self.token()}"),)


def verify_token(token: str, *, secret: str, max_lifetime: float) -> tuple[str, float]:
    """The caller name in a valid service token and its ``exp``; :class:`Unauthenticated` otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            leeway=LEEWAY_SECONDS,
            options={"require": ["sub", "aud", "iat", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid service token: {type(exc).__name__}") from None
    sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("invalid service token: no caller name")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float) or exp - iat > max_lifetime:
        raise Unauthenticated("invalid service token: it lives longer than STREAMER_SERVICE_TOKEN_SECONDS")
    return sub, float(exp)


def signer(settings: Settings, *, default_name: str | None = None) -> ServiceToken | None:
    """The signer of ``settings`` (None without ``STREAMER_SERVICE_TOKEN_SECRET``).

    The name is ``STREAMER_SERVICE_NAME``, else ``default_name``; neither is a
    configuration error (a token must say who is calling).
    """
    if not settings.service_token_secret:
        return None
    name = settings.service_name or default_name
    if not name:
        raise ConfigError(
            "STREAMER_SERVICE_NAME", "required with STREAMER_SERVICE_TOKEN_SECRET (who is calling?)"
        )
    return ServiceToken(
        secret=settings.service_token_secret, name=name, lifetime=settings.service_token_seconds
    )


_signer: ServiceToken | None = None


def configure_service_token(settings: Settings, *, default_name: str | None = None) -> ServiceToken | None:
    """Sign this process's calls to Streamer services when ``STREAMER_SERVICE_TOKEN_SECRET`` is set.

    Called once at start, next to :func:`streamer.rpc.configure_tls`; each service
    passes its own name as ``default_name``.
    """
    global _signer
    _signer = signer(settings, default_name=default_name)
    return _signer


def reset_service_token() -> None:
    """No service token any more (tests)."""
    global _signer
    _signer = None


def call_metadata() -> tuple[tuple[str, str], ...] | None:
    """Metadata for a call to a Streamer service: the service token, when one is configured."""
    return _signer.metadata() if _signer is not None else None


# --------------------------------------------------------------------------- the router's side
def _auth_names(context: aio.ServicerContext) -> tuple[str, ...]:
    auth = context.auth_context() or {}
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            name = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if name and name not in names:
                names.append(name)
    return tuple(names)


def _bearer(context: aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class CallerPolicy:
    """The router's gate: identify each call, then allow it or refuse it (module doc)."""

    def __init__(
        self,
        *,
        rules: Sequence[CallerRule] | None,
        secret: str | None = None,
        max_token_lifetime: float = 300.0,
    ) -> None:
        self.rules = {rule.name: rule for rule in rules} if rules is not None else None
        self.secret = secret
        self.max_token_lifetime = max_token_lifetime
        # Verified tokens -> (name, exp). A caller re-uses one token for half its life, so
        # verifying it (HMAC and claims, ~0.3 ms) once per token instead of once per call
        # keeps the check off connect's Route hot path.
        self._verified: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> CallerPolicy:
        return cls(
            rules=settings.caller_policy,
            secret=settings.service_token_secret,
            max_token_lifetime=settings.service_token_seconds,
        )

    @property
    def enforced(self) -> bool:
        return self.rules is not None

    def identify(self, context: aio.ServicerContext) -> Caller:
        """The caller of ``context``: certificate names, else a verified token's name."""
        names = _auth_names(context)
        if names:
            return Caller(names=names, via="mtls")
        token = _bearer(context)
        if token is None:
            return Caller(names=(), via="none")
        return Caller(names=(self._verify(token),), via="token")

    def _verify(self, token: str) -> str:
        known = self._verified.get(token)
        if known is not None and time.time() < known[1] + LEEWAY_SECONDS:
            return known[0]
        if not self.secret:
            raise Unauthenticated("service tokens are not accepted here (no STREAMER_SERVICE_TOKEN_SECRET)")
        name, exp = verify_token(token, secret=self.secret, max_lifetime=self.max_token_lifetime)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (name, exp)
        return name

    def allows(self, caller: Caller, rpc: str, tenants: Iterable[str]) -> bool:
        """Whether one of the caller's names is granted ``rpc`` for every tenant in ``tenants``."""
        if self.rules is None:
            return True
        wanted = set(tenants)
        for name in caller.names:
            rule = self.rules.get(name)
            if rule is None or not ({"*", rpc} & set(rule.rpcs)):
                continue
            if "*" in rule.tenants or wanted <= set(rule.tenants):
                return True
        return False

    async def admit(self, context: aio.ServicerContext, rpc: str, tenants: Iterable[str] = ()) -> Caller:
        """The caller, or the call ends: ``UNAUTHENTICATED`` (bad token), ``PERMISSION_DENIED``.

        Without a policy nothing is checked (an anonymous caller is returned).
        """
        if self.rules is None:
            return Caller(names=(), via="none")
        try:
            caller = self.identify(context)
        except Unauthenticated as exc:
            REFUSED.labels(caller=ANONYMOUS, rpc=rpc, reason="unauthenticated").inc()
            log.warning("refused %s: %s", rpc, exc, extra={"rpc": rpc})
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise  # abort raises; this line only satisfies the type checker
        tenants = tuple(tenants)
        if not self.allows(caller, rpc, tenants):
            await self.refuse(context, caller, rpc, tenants)
        return caller

    async def refuse(
        self, context: aio.ServicerContext, caller: Caller, rpc: str, tenants: Sequence[str]
    ) -> None:
        """End the call with ``PERMISSION_DENIED`` (counted and logged)."""
        REFUSED.labels(caller=caller.label, rpc=rpc, reason="not_allowed").inc()
        log.warning(
            "refused %s for caller %s",
            rpc,
            caller.label,
            extra={"rpc": rpc, "caller": caller.label, "via": caller.via, "tenants": list(tenants)},
        )
        tenant_text = f" for tenant {', '.join(tenants)}" if tenants else ""
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, f"caller {caller.label!r} may not call {rpc}{tenant_text}"
        )
