"""What the console tests share: a running embedded orderbot with the fake Chat2Desk, accounts,
signing in over HTTP, reading the CSRF token of a page, and a customer who orders."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.config import Settings
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app
from orderbot.web.console.accounts import OperatorAccounts
from orderbot.web.console.sql.sqlite import SqliteRunner
from tests.fakes.chat2desk import FakeChat2Desk
from tests.support.servers import serving

ADMIN = ("olga", "olga-password-1")
OPERATOR = ("timur", "timur-password-1")
HTML = {"Accept": "text/html"}
ORDER = ["Hello", "Chui avenue 120", "0555 123 456", "3", "yes"]


@dataclass
class Shop:
    url: str
    runtime: EmbeddedRuntime
    chat2desk: FakeChat2Desk

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, follow_redirects=False, timeout=15)

    async def customer_says(self, client_id: str, number: int, text: str) -> None:
        async with self.client() as http:
            r = await http.post(
                "/webhook/chat2desk",
                json={
                    "client_id": client_id,
                    "message_id": f"{client_id}-{number}",
                    "text": text,
                    "transport": "whatsapp",
                    "channel_id": 3,
                },
            )
            assert r.status_code == 200, r.text

    async def order(self, client_id: str, address: str = ORDER[1]) -> int:
        """The customer goes through the water flow; the new order's id."""
        for i, text in enumerate([ORDER[0], address, *ORDER[2:]]):
            before = len(self.chat2desk.texts(client_id))
            await self.customer_says(client_id, i, text)
            await wait_for(lambda before=before: len(self.chat2desk.texts(client_id)) > before)
        orders = await self.runtime.admin.list(limit=1)
        return int(orders[0]["id"])


async def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_shop(settings: Settings) -> AsyncIterator[Shop]:
    async with FakeChat2Desk() as chat2desk:
        configured = settings.model_copy(update={"admin_token": "s3cret-admin"})
        runtime = EmbeddedRuntime(
            configured,
            channels={"chat2desk": Chat2DeskChannel(api_url=chat2desk.url, token="test-token")},
        )
        async with serving(create_app(runtime)) as url:
            runner = SqliteRunner(runtime.db)
            accounts = OperatorAccounts(runner)
            await accounts.add(ADMIN[0], "admin", ADMIN[1])
            await accounts.add(OPERATOR[0], "operator", OPERATOR[1])
            await runner.aclose()
            yield Shop(url, runtime, chat2desk)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def sign_in(http: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    page = await http.get("/console/login", headers=HTML)
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token
    return await http.post(
        "/console/login",
        data={"username": name, "password": password, "login_token": token.group(1)},
        headers=HTML,
    )


async def signed_in(http: httpx.AsyncClient, who: tuple[str, str] = ADMIN) -> str:
    """Sign ``who`` in; the CSRF token of the session."""
    r = await sign_in(http, *who)
    assert r.status_code == 303, r.text
    page = await http.get("/console", headers=HTML)
    assert page.status_code == 200
    return csrf_of(page.text)
