"""The demo page ``streamer dev`` serves: the TypeScript client driving the local stack from a browser.

A small aiohttp app on loopback (its own free port, printed after the ready line):

- ``/`` the page, ``/demo.js`` and ``/demo.css`` (``streamer/local/demo/``), ``/client/*.js`` the
  built client module (``clients/js/dist``);
- ``/api/config`` the WebSocket URL(s); ``/api/actions`` the handler's actions with their payload
  schemas, as the registry file describes them;
- ``POST /api/token`` a development token for any user and tenant — only when the stack signs
  with an HS256 secret (the public development secret unless ``STREAMER_JWT_SECRET``), i.e.
  only in development, exactly what ``streamer token`` prints. The request must be
  ``application/json``, so a page of another origin cannot make a browser ask for one without a
  CORS preflight, which this server never answers; and every request must name this server as
  ``127.0.0.1:<port>`` or ``localhost:<port>`` in ``Host``, so a DNS-rebinding site cannot
  pass for the page's own origin.

Every answer carries a strict Content-Security-Policy: scripts and styles only from this
origin (no inline code), connections only to this origin and the stack's WebSocket URLs, no
frames, no forms, no plugins.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import yaml
from aiohttp import web

__all__ = ["CLIENT_DIST", "STATIC", "DemoPage", "content_security_policy"]

HOST = "127.0.0.1"
STATIC = pathlib.Path(__file__).resolve().parent / "demo"
#: The built TypeScript client (a checkout or an editable install; ``make js`` builds it).
CLIENT_DIST = pathlib.Path(__file__).resolve().parents[2] / "clients" / "js" / "dist"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}

TokenMaker = Callable[..., str]


def content_security_policy(ws_urls: Sequence[str]) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self' " + " ".join(ws_urls),
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


class DemoPage:
    """Serve the demo page for a running stack.

    :param ws_urls: the stack's WebSocket URLs (the page connects to the first).
    :param registry_file: the stack's registry file (the actions and their schemas).
    :param token_maker: ``token_maker(user=, tenant=, permissions=)`` -> a JWT, or None when the
        stack has no development secret (then the page asks the user to paste a token).
    """

    def __init__(
        self,
        *,
        ws_urls: Sequence[str],
        registry_file: pathlib.Path | None,
        token_maker: TokenMaker | None,
        port: int = 0,
        client_dist: pathlib.Path = CLIENT_DIST,
    ) -> None:
        self.ws_urls = list(ws_urls)
        self.registry_file = registry_file
        self.token_maker = token_maker
        self.requested_port = port
        self.client_dist = client_dist
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self.csp = content_security_policy(self.ws_urls)

    @property
    def url(self) -> str:
        assert self.port is not None, "start() first"
        return f"http://{HOST}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers])
        app.router.add_get("/", self._index)
        app.router.add_get("/demo.js", self._static)
        app.router.add_get("/demo.css", self._static)
        app.router.add_get("/client/{name}", self._client)
        app.router.add_get("/api/config", self._config)
        app.router.add_get("/api/actions", self._actions)
        app.router.add_post("/api/token", self._token)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.requested_port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ handlers
    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.host not in self._hosts():
                # DNS rebinding: a site that re-points its name at 127.0.0.1 would otherwise be
                # "same origin" with this page and could fetch a token.
                raise web.HTTPMisdirectedRequest(text="this page answers only as 127.0.0.1 or localhost")
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 415...: the same headers
            self._secure(exc.headers)
            raise
        self._secure(response.headers)
        return response

    def _hosts(self) -> set[str]:
        return {f"{HOST}:{self.port}", f"localhost:{self.port}"}

    def _secure(self, headers: Any) -> None:
        headers["Content-Security-Policy"] = self.csp
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cache-Control"] = "no-store"

    def _file(self, path: pathlib.Path) -> web.Response:
        if not path.is_file():
            raise web.HTTPNotFound(text=f"{path.name} not found")
        return web.Response(body=path.read_bytes(), content_type=_TYPES.get(path.suffix, "text/plain"))

    async def _index(self, request: web.Request) -> web.Response:
        return self._file(STATIC / "index.html")

    async def _static(self, request: web.Request) -> web.Response:
        return self._file(STATIC / request.path.lstrip("/"))

    async def _client(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if "/" in name or not name.endswith(".js") or name.startswith("."):
            raise web.HTTPNotFound()
        path = self.client_dist / name
        if not path.is_file():
            raise web.HTTPNotFound(text=f"{name} not found in {self.client_dist}: run `make js`")
        return self._file(path)

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ws_url": self.ws_urls[0], "ws_urls": self.ws_urls, "dev_tokens": self.token_maker is not None}
        )

    async def _actions(self, request: web.Request) -> web.Response:
        actions: list[dict[str, Any]] = []
        if self.registry_file is not None and self.registry_file.exists():
            for doc in yaml.safe_load_all(self.registry_file.read_text()):
                if not isinstance(doc, dict):
                    continue
                for entry in (doc.get("spec") or {}).get("actions") or []:
                    actions.append(
                        {
                            "name": entry.get("name"),
                            "mode": entry.get("mode"),
                            "description": entry.get("description", ""),
                            "timeout": entry.get("timeout"),
                            "requiredPermissions": entry.get("requiredPermissions", []),
                            "payloadSchema": entry.get("payloadSchema"),
                        }
                    )
        return web.json_response({"actions": sorted(actions, key=lambda a: str(a["name"]))})

    async def _token(self, request: web.Request) -> web.Response:
        if self.token_maker is None:
            raise web.HTTPNotFound(text="this stack has no development secret: paste a token instead")
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send application/json")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        user, tenant = body.get("user") or "dev-user", body.get("tenant") or "dev-tenant"
        permissions = body.get("permissions") or []
        if not isinstance(user, str) or not isinstance(tenant, str) or not isinstance(permissions, list):
            raise web.HTTPBadRequest(text="user and tenant are strings, permissions a list")
        token = self.token_maker(user=user, tenant=tenant, permissions=[str(p) for p in permissions])
        return web.Response(text=json.dumps({"token": token}), content_type="application/json")
