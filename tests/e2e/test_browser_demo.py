"""The demo page in real headless Chromium (Debian's chromium, driven by Playwright for Python).

The page (streamer/local/page.py + streamer/local/demo/) runs the TypeScript client against
this module's local stack. Each test saves a full-page screenshot under
``.artifacts/browser/`` (git-ignored; ``STREAMER_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from e2e_helpers import running_stack
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from streamer.client import StreamerClient
from streamer.local.page import DemoPage
from streamer.local.stack import LocalStack

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = pathlib.Path(os.environ.get("STREAMER_ARTIFACTS") or ROOT / ".artifacts") / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",  # as root, Chromium runs only without its sandbox
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000
BAR_STATE = """card => {
    const el = document.querySelector(card);
    return [el.querySelector('.bar').value, !el.querySelector('.result').hidden, el.dataset.status];
}"""


def chromium() -> str:
    path = os.environ.get("STREAMER_CHROMIUM") or shutil.which("chromium")
    assert path, "Debian's chromium is needed: `make setup` installs it (scripts/install-browser.sh)"
    return path


@pytest.fixture(scope="module")
async def stack(dynamodb: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    # Report steps slow enough that the bar is seen between 0 and 100.
    env = {"STREAMER_EXAMPLES_STEP_SECONDS": "0.3"}
    async with running_stack(dynamodb, tmp_path_factory.mktemp("browser-stack"), env=env) as st:
        yield st


@pytest.fixture(scope="module")
async def page_url(stack: LocalStack) -> AsyncIterator[str]:
    page = DemoPage(ws_urls=stack.ws_urls, registry_file=stack.registry_file, token_maker=stack.token)
    url = await page.start()
    try:
        yield url
    finally:
        await page.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        # executable_path: Debian's chromium; Playwright never downloads a browser here.
        instance = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            await instance.close()


class Tab:
    """One page of its own browser context, recording console errors and page errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console.error: {msg.text}")

    async def screenshot(self, name: str) -> pathlib.Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def send(self, action: str, payload: dict[str, Any] | None = None, *, request_id: str) -> str:
        """Pick an action, edit the payload, send; returns the request card's selector."""
        await self.page.select_option("#action", action)
        if payload is not None:
            await self.page.fill("#payload", json.dumps(payload))
        await self.page.fill("#request-id", request_id)
        await self.page.click("#send")
        card = f'.request[data-request-id="{request_id}"]'
        await self.page.wait_for_selector(card, timeout=WAIT_MS)
        return card


@pytest.fixture
async def open_tab(browser: Browser, page_url: str) -> AsyncIterator[Any]:
    contexts = []

    async def opener(query: str = "") -> Tab:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        tab = Tab(await context.new_page())
        await tab.page.goto(page_url + query)
        await tab.page.wait_for_selector("#state[data-state=open]", timeout=WAIT_MS)
        return tab

    try:
        yield opener
    finally:
        for context in contexts:
            await context.close()


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_the_page_loads_with_no_console_error_and_a_strict_csp(open_tab: Any, page_url: str) -> None:
    tab = await open_tab()
    response = await tab.page.request.get(page_url)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    actions = await tab.page.locator("#actions li").evaluate_all("els => els.map(e => e.dataset.action)")
    assert {"echo", "generate_report", "delay"} <= set(actions)
    await tab.page.click('#actions li[data-action="generate_report"]')
    assert "start_date" in (await tab.page.text_content("#schema") or "")
    assert (await tab.page.input_value("#payload")).count("report_type") == 1
    await tab.screenshot("page_loads")
    assert tab.errors == []


async def test_a_sync_echo_shows_its_result(open_tab: Any) -> None:
    tab = await open_tab()
    card = await tab.send("echo", {"message": "hello from chromium"}, request_id=rid("echo"))
    await tab.page.wait_for_selector(f"{card}[data-status=COMPLETED] .result:not([hidden])", timeout=WAIT_MS)
    assert "hello from chromium" in await tab.page.inner_text(f"{card} .result")
    assert await tab.page.inner_text(f"{card} .pct") == "100%"
    await tab.screenshot("sync_echo")
    assert tab.errors == []


async def test_an_async_report_shows_its_bar_reaching_100_and_then_the_result(open_tab: Any) -> None:
    tab = await open_tab()
    card = await tab.send("generate_report", None, request_id=rid("report"))  # the page's example payload
    seen: list[tuple[float, bool]] = []  # (bar value, result shown) as the page shows them
    for _ in range(1200):
        value, shown, status = await tab.page.evaluate(
            BAR_STATE,
            card,
        )
        if not seen or seen[-1] != (value, shown):
            seen.append((value, shown))
        if status in ("COMPLETED", "FAILED"):
            break
        await asyncio.sleep(0.05)
    assert seen[-1] == (100, True), seen
    values = [v for v, _ in seen]
    assert values == sorted(values), f"the bar only moves forward: {seen}"
    assert any(0 < v < 100 for v in values), f"the bar was seen on its way: {seen}"
    assert all(not shown for v, shown in seen if v < 100), "no result before the bar reached 100"
    lines = await tab.page.locator(f"{card} .messages li").all_inner_texts()
    assert any(line.startswith("[100%]") for line in lines), lines
    await tab.screenshot("async_report")
    assert tab.errors == []


async def test_cancel_ends_a_delay_with_cancelled(open_tab: Any, stack: LocalStack) -> None:
    tab = await open_tab()
    request_id = rid("delay")
    card = await tab.send("delay", {"seconds": 60, "steps": 60}, request_id=request_id)
    await tab.page.wait_for_selector(f"{card}[data-status=PROCESSING]", timeout=WAIT_MS)
    await tab.page.click(f"{card} .cancel")
    await tab.page.wait_for_selector(f"{card}[data-status=CANCELLED] .error:not([hidden])", timeout=WAIT_MS)
    assert await tab.page.inner_text(f"{card} .error .code") == "CANCELLED"
    assert await tab.page.is_disabled(f"{card} .cancel")
    await tab.screenshot("cancel_delay")
    # The server stopped it: asked over its own connection, the request is CANCELLED.
    async with StreamerClient(stack.ws_url, token=stack.token()) as client:
        status = await client.status(request_id)
    assert status["status"] == "CANCELLED", status
    assert tab.errors == []


async def test_the_page_reconnects_when_the_server_closes_the_socket_and_still_shows_the_result(
    open_tab: Any, stack: LocalStack
) -> None:
    tab = await open_tab()
    card = await tab.send("delay", {"seconds": 6, "steps": 12}, request_id=rid("survivor"))
    await tab.page.wait_for_selector(f"{card}[data-status=PROCESSING]", timeout=WAIT_MS)
    # The gateway goes away (SIGTERM: it drains, closing every socket with 1001) and comes back.
    await stack.kill("connect", sig=signal.SIGTERM)
    await tab.page.wait_for_selector("#state[data-state=reconnecting]", timeout=WAIT_MS)
    await tab.screenshot("reconnect_while_down")
    await stack.restart("connect", kill_first=False)
    await tab.page.wait_for_selector("#state[data-state=open]", timeout=WAIT_MS)
    await tab.page.wait_for_selector(f"{card}[data-status=COMPLETED] .result:not([hidden])", timeout=WAIT_MS)
    assert '"seconds": 6' in await tab.page.inner_text(f"{card} .result")
    assert await tab.page.inner_text(f"{card} .pct") == "100%"
    await tab.screenshot("reconnect_result")
    # While the gateway was down, Chromium logs each failed attempt; nothing else is an error.
    assert [e for e in tab.errors if "WebSocket connection to" not in e] == []


async def test_a_tenants_page_cannot_see_another_tenants_request(open_tab: Any) -> None:
    owner = await open_tab("?user=ann&tenant=acme")
    colleague = await open_tab("?user=bob&tenant=acme")
    stranger = await open_tab("?user=eve&tenant=umbrella")
    request_id = rid("private")
    card = await owner.send("delay", {"seconds": 3, "steps": 6}, request_id=request_id)
    await owner.page.wait_for_selector(f"{card}[data-status=PROCESSING]", timeout=WAIT_MS)

    await stranger.page.fill("#follow-id", request_id)
    await stranger.page.click("#follow")
    # (wait_for_function would eval a string, which the page's CSP rightly refuses)
    await stranger.page.locator("#follow-error", has_text="NOT_FOUND").wait_for(timeout=WAIT_MS)
    assert (await stranger.page.inner_text("#follow-error")).startswith("NOT_FOUND")
    assert await stranger.page.locator(".request").count() == 0

    await colleague.page.fill("#follow-id", request_id)
    await colleague.page.click("#follow")
    done = f"{card}[data-status=COMPLETED] .result:not([hidden])"
    await colleague.page.wait_for_selector(done, timeout=WAIT_MS)
    await owner.page.wait_for_selector(done, timeout=WAIT_MS)
    assert await colleague.page.inner_text(f"{card} .result") == await owner.page.inner_text(
        f"{card} .result"
    )
    await stranger.screenshot("tenant_stranger")
    await colleague.screenshot("tenant_colleague")
    assert owner.errors == colleague.errors == stranger.errors == []
