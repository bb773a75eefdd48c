"""Shared pieces of the security tests: keys, hand-made tokens, an in-process gateway.

The gateway is the real :class:`services.connect.service.ConnectService` on 127.0.0.1 with
ports picked free, in front of a small in-test ``Router`` servicer (:class:`EchoRouter`)
so these tests do not depend on the router's business logic: they are about what the
gateway and the gRPC servers let through, not about routing.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf import descriptor as pb_descriptor
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jwtlib import assembled, b64url, hmac_signed, public_pem

from services.connect.service import ConnectService
from streamer import protocol, rpc
from streamer.api.v1 import router_pb2, router_pb2_grpc
from streamer.auth import TokenVerifier
from streamer.config import Settings

# --------------------------------------------------------------------------- keys

SECRET = "security-test-secret-long-enough-for-hs512-0123456789abcdefghijkl"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ISSUER = "https://idp.streamer.test"
AUDIENCE = "streamer-ws"


RSA_PEM = public_pem(RSA_KEY)


def good_claims(**overrides: Any) -> dict[str, Any]:
    """Claims that pass every check of the RS256 gateway; ``None`` removes a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "tenant_id": "tenant-a",
        "permissions": ["reports:read"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def rs256(claims: Mapping[str, Any], *, key: Any = RSA_KEY, headers: Mapping[str, Any] | None = None) -> str:
    return jwt.encode(dict(claims), key, algorithm="RS256", headers=dict(headers) if headers else None)


def unsigned(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand (PyJWT refuses to make most of the attacks)."""
    return assembled(header, claims, signature)


def hs256_with(secret: bytes, claims: Mapping[str, Any], *, header: Mapping[str, Any] | None = None) -> str:
    """HMAC-SHA256 over any secret bytes: the RS/HS confusion attack signs with the public PEM."""
    return hmac_signed(secret, header or {"alg": "HS256", "typ": "JWT"}, claims)


def tamper_signature(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{b64url(bytes(raw))}"


def tamper_claims(token: str, **changes: Any) -> str:
    """Same header and signature, different claims (e.g. another tenant)."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    return f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"


# --------------------------------------------------------------------------- router


class EchoRouter(router_pb2_grpc.RouterServicer):
    """A stand-in router: answers every Route with one ``response`` frame naming the action.

    Payload and metadata are decoded (so a payload the gateway should never forward,
    e.g. not JSON, fails the call loudly) and counted per connection.
    """

    def __init__(self) -> None:
        self.routed = 0
        self.bad_json = 0

    async def Route(
        self, request: router_pb2.RouteRequest, context: aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        self.routed += 1
        try:
            payload = json.loads(request.payload or b"{}")
            json.loads(request.metadata or b"{}")
        except ValueError:
            self.bad_json += 1
            raise
        frame = protocol.response_message(
            request.request_id, {"action": request.action, "keys": sorted(payload)[:5]}
        )
        return router_pb2.RouteResponse(frames=[protocol.encode_bytes(frame)])

    async def Publish(
        self, request: router_pb2.PublishRequest, context: aio.ServicerContext
    ) -> router_pb2.PublishResponse:
        return router_pb2.PublishResponse()


@contextlib.asynccontextmanager
async def echo_router() -> AsyncIterator[tuple[str, EchoRouter]]:
    servicer = EchoRouter()
    server = rpc.create_server()
    router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
    rpc.finish_server(server, service_names=["streamer.v1.Router"])
    port = rpc.bind(server, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


@dataclasses.dataclass
class Gateway:
    service: ConnectService
    router: EchoRouter | None

    @property
    def ws_url(self) -> str:
        return f"http://127.0.0.1:{self.service.ws_port}/ws"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.service.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"


def gateway_settings(base: Settings, *, router_address: str, **overrides: Any) -> Settings:
    """``base`` (DynamoDB Local, fresh tables) made loopback-only with free ports."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "ws_port": 0,
        "grpc_port": 0,
        "http_port": 0,
        "router_address": router_address,
        "drain_seconds": 2.0,
        **overrides,
    }
    return dataclasses.replace(base, **values)


@contextlib.asynccontextmanager
async def gateway(
    base: Settings,
    *,
    verifier: TokenVerifier | None = None,
    router_address: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """The real connect service in this process, in front of :class:`EchoRouter` (or a given router)."""
    async with contextlib.AsyncExitStack() as stack:
        servicer: EchoRouter | None = None
        if router_address is None:
            address, servicer = await stack.enter_async_context(echo_router())
        else:
            address = router_address
        if not any(overrides.get(k) for k in ("jwt_secret", "jwt_public_key", "jwks_url")):
            overrides["jwt_secret"] = SECRET
        settings = gateway_settings(base, router_address=address, **overrides)
        # Without an explicit verifier the service builds its own from the settings, as in production.
        service = ConnectService(settings=settings, verifier=verifier)
        await service.start()
        try:
            yield Gateway(service=service, router=servicer)
        finally:
            await service.stop()


async def upgrade_status(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, Any] | None, str]:
    """Attempt a WebSocket upgrade by hand; (HTTP status, JSON body or None, raw body)."""
    hdrs = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        **(headers or {}),
    }
    async with session.get(url, headers=hdrs, params=params) as resp:
        if resp.status == 101:
            return 101, None, ""
        text = await resp.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return resp.status, body, text


# --------------------------------------------------------------------------- gRPC


@dataclasses.dataclass(frozen=True)
class Method:
    path: str
    input_type: Any
    server_streaming: bool


def methods_of(file_descriptor: pb_descriptor.FileDescriptor, module: Any) -> list[Method]:
    """Every RPC of every service in a generated ``*_pb2`` module."""
    out: list[Method] = []
    for service in file_descriptor.services_by_name.values():
        for method in service.methods:
            input_cls = getattr(module, method.input_type.name)
            out.append(Method(f"/{service.full_name}/{method.name}", input_cls, method.server_streaming))
    return out


async def raw_call(
    channel: aio.Channel, method: Method, data: bytes, *, timeout: float = 10.0
) -> tuple[str, str, list[bytes]]:
    """Call ``method`` with raw request bytes; (status name, details, raw responses)."""
    try:
        if method.server_streaming:
            call = channel.unary_stream(method.path)  # type: ignore[call-arg]  # raw bytes both ways
            responses = [r async for r in call(data, timeout=timeout)]
        else:
            call2 = channel.unary_unary(method.path)  # type: ignore[call-arg]
            responses = [await call2(data, timeout=timeout)]
    except aio.AioRpcError as exc:
        return exc.code().name, exc.details() or "", []
    return "OK", "", responses


#: gRPC statuses a well-formed but hostile message may get.
DOCUMENTED_STATUSES = frozenset({"OK", "INVALID_ARGUMENT", "NOT_FOUND"})


def _undecodable(status: str, details: str) -> bool:
    """The grpc runtime's own answer to bytes that are not a protobuf message."""
    text = details.lower()
    return status in ("UNKNOWN", "INTERNAL") and ("pars" in text or "deserializ" in text or "decode" in text)


async def assert_serving(target: str) -> None:
    async with rpc.channel(target) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def random_inputs(rng: random.Random, method: Method, count: int) -> list[bytes]:
    """Random bytes, and valid encodings with random bytes flipped, cut or appended."""
    valid = method.input_type()
    for field in method.input_type.DESCRIPTOR.fields:
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:  # protobuf < 5.28
            repeated = field.label == field.LABEL_REPEATED
        if field.type == field.TYPE_STRING and not repeated:
            setattr(valid, field.name, "echo")
        elif field.type == field.TYPE_BYTES and not repeated:
            setattr(valid, field.name, b'{"message":"hi"}')
    base = valid.SerializeToString()
    out: list[bytes] = []
    for i in range(count):
        mode = i % 4
        if mode == 0 or not base:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 600))))
        elif mode == 1:
            data = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            out.append(bytes(data))
        elif mode == 2:
            out.append(base[: rng.randrange(len(base))])
        else:
            out.append(base + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 60))))
    return out


async def fuzz_raw(
    target: str, methods: list[Method], *, per_method: int, seed: int
) -> collections.Counter[str]:
    rng = random.Random(seed)
    seen: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    async with rpc.channel(target) as channel:
        for method in methods:
            for data in random_inputs(rng, method, per_method):
                status, details, _ = await raw_call(channel, method, data)
                seen[status] += 1
                if status in DOCUMENTED_STATUSES or _undecodable(status, details):
                    continue
                problems.append(f"{method.path} {data[:40]!r}: {status} {details[:160]}")
    assert not problems, f"{len(problems)} undocumented answer(s):\n" + "\n".join(problems[:10])
    await assert_serving(target)
    return seen


# --------------------------------------------------------------------------- hostile frames


DOCUMENTED_CODES = frozenset(protocol.ERROR_CODES)
ANSWER_TYPES = frozenset({"error", "response", "acknowledgment", "status", "pong", "progress", "complete"})


def _nested(depth: int, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _random_text(rng: random.Random, n: int) -> str:
    alphabet = '{}[]":,\\ abcdefghijklmnopqrstuvwxyz0123456789$._-\t\n\u00e9\u4e2d\U0001f600'
    return "".join(rng.choice(alphabet) for _ in range(n))


def _valid_frame(rng: random.Random) -> dict[str, Any]:
    frame: dict[str, Any] = {"action": rng.choice(["echo", "echo_async", "delay", "x.y-z_1", "A" * 128])}
    if rng.random() < 0.7:
        frame["id"] = f"fz-{rng.getrandbits(48):x}"
    if rng.random() < 0.8:
        frame["payload"] = {"message": _random_text(rng, rng.randint(0, 40)), "n": rng.randint(-9, 9)}
    if rng.random() < 0.3:
        frame["metadata"] = {"priority": rng.randint(0, 9)}
    return frame


_WRONG_VALUES: Sequence[Any] = (
    None,
    0,
    -1,
    1.5,
    1e308,
    True,
    [],
    ["echo"],
    {},
    {"a": 1},
    "",
    " ",
    "has space",
    "x" * 129,
    "\u0000",
    "$",
    "$nope",
    "é",
)


def hostile_frame(rng: random.Random, *, limit: int) -> tuple[str, str | bytes]:
    """One hostile frame: (category, frame). Never over the 4x hard limit (that closes the socket)."""
    kind = rng.choice(
        [
            "malformed",
            "truncated",
            "huge",
            "nested",
            "binary",
            "binary_json",
            "wrong_type",
            "system",
            "unicode",
            "valid",
            "not_object",
            "empty",
        ]
    )
    if kind == "malformed":
        return kind, _random_text(rng, rng.randint(1, 200))
    if kind == "truncated":
        text = json.dumps(_valid_frame(rng))
        return kind, text[: rng.randint(0, len(text) - 1)]
    if kind == "huge":
        size = rng.randint(limit + 1, limit * 3)
        return kind, json.dumps({"action": "echo", "payload": {"blob": "x" * size}})
    if kind == "nested":
        # Deep but under the size limit (6 bytes a level at most), so only the depth is wrong.
        depth = min(rng.choice([protocol.MAX_DEPTH + 1, 200, 990, 1500, 20_000]), (limit - 64) // 6)
        if rng.random() < 0.5:
            return kind, '{"action":"echo","payload":{"a":' + _nested(depth, rng) + "}}"
        return kind, _nested(depth, rng)
    if kind == "binary":
        return kind, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    if kind == "binary_json":
        return kind, json.dumps(_valid_frame(rng)).encode()
    if kind == "wrong_type":
        frame = _valid_frame(rng)
        field = rng.choice(["action", "id", "request_id", "payload", "metadata"])
        frame[field] = rng.choice(_WRONG_VALUES)
        return kind, json.dumps(frame)
    if kind == "system":
        action = rng.choice([*sorted(protocol.SYSTEM_ACTIONS), "$unknown", "$", "$$resume"])
        payload = rng.choice(
            [{}, {"request_id": rng.choice(_WRONG_VALUES)}, {"request_id": "r-1"}, {"id": 5}]
        )
        return kind, json.dumps({"action": action, "payload": payload})
    if kind == "unicode":
        # Lone surrogates, NULs, overlong escapes: valid JSON text that is not valid UTF-8 data.
        value = rng.choice(["\\ud800", "\\udfff", "\\u0000", "\\ud83d\\ude00", "\\uffff", "\\ud800\\ud800"])
        where = rng.choice(["payload", "metadata", "action", "id"])
        if where in ("payload", "metadata"):
            return kind, '{"action":"echo","' + where + '":{"m":"' + value + '"}}'
        if where == "id":
            return kind, '{"action":"echo","id":"' + value + '"}'
        return kind, '{"action":"' + value + '"}'
    if kind == "not_object":
        return kind, json.dumps(rng.choice([[], [1, 2], "echo", 42, None, True, 1.5e300]))
    if kind == "empty":
        return kind, rng.choice(["", " ", "\n", "{}", "null"])
    return kind, json.dumps(_valid_frame(rng))


def hostile_frames(seed: int, count: int, *, limit: int) -> Iterator[tuple[str, str | bytes]]:
    rng = random.Random(seed)
    for _ in range(count):
        yield hostile_frame(rng, limit=limit)


# --------------------------------------------------------------------------- raw clients


class Peer:
    """A raw WebSocket client that keeps every frame it receives (a reader task drains it)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
        self.ws = ws
        self.session = session
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, token: str) -> Peer:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
        except BaseException:
            await session.close()
            raise
        return cls(ws, session)

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return
            self.frames.append(json.loads(msg.data))
            self._arrived.set()

    async def send(self, frame: Mapping[str, Any] | str) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def wait_for(self, pred: Any, *, timeout: float = 30.0) -> dict[str, Any]:
        """The first frame (old or new) matching ``pred``; AssertionError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if pred(frame):
                    return frame
            seen = len(self.frames)
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; last frames: {self.frames[-5:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=left)

    def about(self, request_id: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("request_id") == request_id]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self.session.close()
