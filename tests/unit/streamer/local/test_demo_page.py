"""The demo page's server (streamer/local/page.py): headers, the dev-token endpoint, paths."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from streamer.local.page import CLIENT_DIST, DemoPage

ROOT = pathlib.Path(__file__).resolve().parents[4]
WS = "ws://127.0.0.1:1/ws"


def _token(**kw: Any) -> str:
    return f"token-for-{kw['user']}@{kw['tenant']}:{','.join(kw['permissions'])}"


async def _started(**kw: Any) -> DemoPage:
    page = DemoPage(ws_urls=[WS], registry_file=ROOT / "examples" / "registry.yaml", **kw)
    await page.start()
    return page


@pytest.fixture
async def page() -> AsyncIterator[DemoPage]:
    started = await _started(token_maker=_token)
    try:
        yield started
    finally:
        await started.stop()


async def test_every_answer_carries_a_strict_csp(page: DemoPage) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("", "demo.js", "demo.css", "client/index.js", "api/config", "api/actions", "nope"):
            async with http.get(page.url + path) as resp:
                csp = resp.headers["Content-Security-Policy"]
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert "default-src 'none'" in csp and "script-src 'self';" in csp
                assert f"connect-src 'self' {WS}" in csp and "unsafe" not in csp
                assert "frame-ancestors 'none'" in csp
                assert resp.status == (404 if path == "nope" else 200), path
    index = (ROOT / "streamer" / "local" / "demo" / "index.html").read_text()
    assert "<script>" not in index and " style=" not in index and "onclick" not in index


async def test_the_dev_token_endpoint_wants_json_and_only_exists_in_dev(page: DemoPage) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(page.url + "api/token", json={"user": "ann", "tenant": "acme"}) as resp:
            assert resp.status == 200
            assert (await resp.json()) == {"token": "token-for-ann@acme:"}
        # A form post (what another origin could make a browser send without a preflight) is refused.
        async with http.post(page.url + "api/token", data="user=ann") as resp:
            assert resp.status == 415
        async with http.post(page.url + "api/token", json=["x"]) as resp:
            assert resp.status == 400
        async with http.get(page.url + "api/token") as resp:
            assert resp.status == 405
    prod = await _started(token_maker=None)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(prod.url + "api/token", json={}) as resp:
                assert resp.status == 404
            async with http.get(prod.url + "api/config") as resp:
                assert (await resp.json())["dev_tokens"] is False
    finally:
        await prod.stop()


async def test_only_the_loopback_host_names_are_answered(page: DemoPage) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(page.url, headers={"Host": f"localhost:{page.port}"}) as resp:
            assert resp.status == 200
        # DNS rebinding: evil.example resolving to 127.0.0.1 sends its own name.
        for host in (f"evil.example:{page.port}", "127.0.0.1:1", "evil.example"):
            async with http.post(page.url + "api/token", json={}, headers={"Host": host}) as resp:
                assert resp.status == 421, host
                assert "Content-Security-Policy" in resp.headers


async def test_the_actions_come_with_their_schemas(page: DemoPage) -> None:
    async with aiohttp.ClientSession() as http, http.get(page.url + "api/actions") as resp:
        actions = {a["name"]: a for a in (await resp.json())["actions"]}
    assert actions["generate_report"]["mode"] == "async"
    assert "start_date" in actions["generate_report"]["payloadSchema"]["properties"]


async def test_only_the_built_client_files_are_served(page: DemoPage, tmp_path: pathlib.Path) -> None:
    assert (CLIENT_DIST / "index.js").is_file()
    async with aiohttp.ClientSession() as http:
        for path in ("client/..%2Fpackage.json", "client/.hidden.js", "client/index.d.ts", "client/nope.js"):
            async with http.get(page.url + path) as resp:
                assert resp.status == 404, path
    empty = await _started(token_maker=None, client_dist=tmp_path)
    try:
        async with aiohttp.ClientSession() as http, http.get(empty.url + "client/index.js") as resp:
            assert resp.status == 404 and "make js" in await resp.text()
    finally:
        await empty.stop()
