"""The console in a real browser: Playwright driving Debian's Chromium (never a downloaded
one), against an embedded orderbot with the fake Chat2Desk. Skipped when /usr/bin/chromium or
the playwright package is missing, unless ORDERBOT_REQUIRE_SERVICES=1.

Set ORDERBOT_SCREENSHOT_DIR to keep a screenshot of every page at desktop and phone width
(docs/console.md shows them).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orderbot.config import Settings
from orderbot.desk.texts import flow_text, status_notification
from orderbot.dialog.loader import load_flow
from tests.conftest import REQUIRE_SERVICES
from tests.support.console import ADMIN, OPERATOR, Shop, running_shop, wait_for

CHROMIUM = Path("/usr/bin/chromium")
FLOW = load_flow("water")
CONNECTING = flow_text(FLOW, "handoff_started", "en")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
XSS_ADDRESS = "<img src=x onerror=\"window.__xss='img'\"><script>window.__xss='script'</script>"

pytestmark = pytest.mark.timeout(180)


def _require_browser() -> None:
    reason = ""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[dev]')"
    if not reason and not CHROMIUM.exists():
        reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} and ORDERBOT_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        found = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield found
        finally:
            await found.close()


@pytest.fixture
async def shop(settings: Settings) -> AsyncIterator[Shop]:
    async with running_shop(settings) as found:
        yield found


class Shots:
    """Screenshots of pages at desktop and phone width, when asked for."""

    def __init__(self, browser: Any, shop: Shop) -> None:
        target = os.environ.get("ORDERBOT_SCREENSHOT_DIR", "")
        self.dir = Path(target) if target else None
        self.browser = browser
        self.shop = shop

    async def take(self, context: Any, name: str, path: str) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        cookies = await context.cookies()
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            other = await self.browser.new_context(viewport=size, base_url=self.shop.url)
            await other.add_cookies(cookies)
            page = await other.new_page()
            await page.goto(path)
            await page.screenshot(path=str(self.dir / f"{name}-{label}.png"), full_page=True)
            await other.close()


async def sign_in(page: Any, name: str, password: str) -> None:
    await page.goto("/console")
    assert "/console/login" in page.url
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r".*/console$"))


async def test_operator_works_an_order_end_to_end(browser: Any, shop: Shop) -> None:
    shots = Shots(browser, shop)
    context = await browser.new_context(viewport=DESKTOP, base_url=shop.url, accept_downloads=True)
    page = await context.new_page()
    await page.goto("/console/login")
    await shots.take(context, "login", "/console/login")
    await sign_in(page, *ADMIN)
    assert await page.locator("header .who").inner_text() == ADMIN[0]

    # A webhook's order appears on the open board without a reload, counted in the title.
    order_id = await shop.order("501", address=XSS_ADDRESS)
    row = page.locator(f'tr[data-id="{order_id}"]')
    await row.wait_for(timeout=20_000)
    assert (await page.title()).startswith("(1) ")
    assert await page.evaluate("window.__xss") is None
    assert "<script>" in await row.inner_text()  # shown as text, not run

    await shop.order("502", address="ул. Киевская 120, кв. 5")
    await page.locator("tr[data-id]").nth(1).wait_for()
    await shots.take(context, "orders", "/console")

    # Its page shows the conversation; a status button notifies the customer.
    await row.locator("a").click()
    await page.wait_for_url(f"**/console/orders/{order_id}")
    conversation = page.locator(".conversation")
    shown = await conversation.inner_text()
    for text in ("Hello", "0555 123 456", "yes", f"Order #{order_id} is placed"):
        assert text in shown  # both directions, from the message log
    assert await conversation.locator("li.msg").count() == 10
    assert await page.evaluate("window.__xss") is None
    await page.fill("input[name=note]", "paid in cash")
    await page.click("button[name=status][value=confirmed]")
    await page.wait_for_url(f"**/console/orders/{order_id}?done=status")
    expected = status_notification(FLOW, "confirmed", "en", order_id=order_id)
    await wait_for(lambda: expected in shop.chat2desk.texts("501"))
    history = await page.locator(".history").inner_text()
    assert "confirmed" in history and f"by {ADMIN[0]}" in history
    await page.fill("textarea[name=text]", "Leave at the door")
    await page.click("button:has-text('Save note')")
    await page.wait_for_url("**done=note**")
    await shots.take(context, "order", f"/console/orders/{order_id}")

    # A customer asks for a person; the operator replies from the console, then hands back.
    await shop.customer_says("777", 0, "Hello")
    await wait_for(lambda: shop.chat2desk.texts("777"))
    await shop.customer_says("777", 1, "operator")
    await wait_for(lambda: CONNECTING in shop.chat2desk.texts("777"))  # handed off
    await page.goto("/console/handoffs")
    await shots.take(context, "handoffs", "/console/handoffs")
    await page.click('a[href="/console/handoffs/chat2desk/777"]')
    # What the customer writes now appears on the open page without a reload.
    await shop.customer_says("777", 2, "I need 20 bottles for an office")
    await page.locator(".conversation li.msg.in", has_text="20 bottles").wait_for(timeout=20_000)
    await page.fill("textarea[name=text]", "Hello, this is Olga. How can I help?")
    await page.click("form.reply button[type=submit]")
    await page.wait_for_url("**done=sent")
    await wait_for(lambda: "Hello, this is Olga. How can I help?" in shop.chat2desk.texts("777"))
    await shots.take(context, "handoff", "/console/handoffs/chat2desk/777")
    before = len(shop.chat2desk.texts("777"))
    await page.click("button:has-text('Hand back to the bot')")
    await page.wait_for_url("**/console/handoffs?done=handback")
    await wait_for(lambda: len(shop.chat2desk.texts("777")) > before)
    assert "Let's continue" in shop.chat2desk.texts("777")[before]
    await shop.customer_says("777", 3, "Chui avenue 1")  # the bot answers again
    await wait_for(lambda: any("phone" in t for t in shop.chat2desk.texts("777")[before:]))

    # A reply that cannot be sent ends among the dead letters.
    shop.chat2desk.fail_client("888", status=400)
    await shop.customer_says("888", 0, "Hello")
    for _ in range(50):
        await page.goto("/console/dead-letters")
        if await page.locator("ul.letters li").count():
            break
        await page.wait_for_timeout(200)
    assert await page.locator("ul.letters li").count() == 1
    await shots.take(context, "dead-letters", "/console/dead-letters")

    await page.goto("/console/stats")
    assert await page.locator("svg.chart").count() == 3
    await shots.take(context, "stats", "/console/stats")
    await page.goto("/console/operators")
    await shots.take(context, "operators", "/console/operators")

    # CSV download.
    await page.goto("/console")
    async with page.expect_download() as download_info:
        await page.click("a.button:has-text('CSV')")
    download = await download_info.value
    content = await asyncio.to_thread(Path(await download.path()).read_bytes)
    assert content.startswith(b"\xef\xbb\xbf") and "Киевская".encode() in content

    # Logout: the console is closed again.
    await page.click("form.logout button")
    await page.wait_for_url("**/console/login")
    await page.goto("/console")
    assert "/console/login" in page.url
    await context.close()


async def test_csrf_and_roles_in_the_browser(browser: Any, shop: Shop) -> None:
    order_id = await shop.order("601")
    context = await browser.new_context(viewport=PHONE, base_url=shop.url)
    page = await context.new_page()
    await sign_in(page, *OPERATOR)
    # An operator sees no accounts link and is refused the page.
    assert await page.locator('a[href="/console/operators"]').count() == 0
    response = await page.goto("/console/operators")
    assert response.status == 403
    # A request with the session cookie but without the CSRF token changes nothing.
    status = await page.evaluate(
        """async (id) => (await fetch(`/console/orders/${id}/status`, {
            method: 'POST', body: new URLSearchParams({status: 'cancelled'}),
        })).status""",
        order_id,
    )
    assert status == 403
    order = await shop.runtime.admin.get(order_id)
    assert order is not None and order["status"] == "new"
    # A page elsewhere cannot post with the operator's cookie: SameSite=Lax keeps it home.
    cookie = next(c for c in await context.cookies() if c["name"] == "orderbot_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    await context.close()
