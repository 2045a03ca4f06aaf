"""The web console over plain HTTP on a real embedded server: sign-in and sessions, CSRF,
throttling, every route's 401/403/404/422, the board, an order's page and status buttons
(the customer notified through the fake Chat2Desk), notes, handoff replies and handback, dead
letters, numbers and the CSV export, and escaping of what customers write."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orderbot.config import Settings
from orderbot.desk.texts import flow_text, status_notification
from orderbot.dialog.loader import load_flow
from tests.support.console import (
    ADMIN,
    HTML,
    OPERATOR,
    Shop,
    csrf_of,
    running_shop,
    sign_in,
    signed_in,
    wait_for,
)

FLOW = load_flow("water")
CONNECTING = flow_text(FLOW, "handoff_started", "en")
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
async def shop(settings: Settings) -> AsyncIterator[Shop]:
    async with running_shop(settings) as found:
        yield found


async def test_sign_in_sets_a_safe_cookie_and_pages_need_it(shop: Shop) -> None:
    async with shop.client() as http:
        # No session: pages redirect to the login, scripts get 401 JSON.
        r = await http.get("/console?status=new", headers=HTML)
        assert r.status_code == 303
        assert r.headers["location"] == "/console/login?next=%2Fconsole%3Fstatus%3Dnew"
        for path in (
            "/console",
            "/console/orders/1",
            "/console/orders.csv",
            "/console/stats",
            "/console/handoffs",
            "/console/dead-letters",
            "/console/operators",
            "/console/orders/new?after=0",
            "/api/stats",
        ):
            r = await http.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"] == "unauthorized", path
        r = await http.post("/console/orders/1/status", data={"status": "confirmed"})
        assert r.status_code == 401

        r = await sign_in(http, ADMIN[0], "wrong password")
        assert r.status_code == 401 and "Wrong name or password." in r.text
        r = await sign_in(http, "nobody", "whatever-password")
        assert r.status_code == 401
        r = await sign_in(http, *ADMIN)
        assert r.status_code == 303 and r.headers["location"] == "/console"
        cookie = next(
            v for k, v in r.headers.multi_items() if k == "set-cookie" and "orderbot_console=" in v
        )
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie

        page = await http.get("/console", headers=HTML)
        assert page.status_code == 200 and "olga" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
        assert page.headers["x-frame-options"] == "DENY"

        # Logout needs the CSRF token, then ends the session for good.
        assert (await http.post("/console/logout")).status_code == 403
        r = await http.post("/console/logout", data={"csrf_token": csrf_of(page.text)})
        assert r.status_code == 303
    async with shop.client() as stale:
        stale.cookies.set("orderbot_console", cookie.split(";")[0].split("=", 1)[1])
        assert (await stale.get("/console")).status_code == 401


async def test_login_form_needs_its_own_token_and_a_next_stays_on_the_console(shop: Shop) -> None:
    async with shop.client() as http:
        r = await http.post("/console/login", data={"username": ADMIN[0], "password": ADMIN[1]})
        assert r.status_code == 403
        page = await http.get("/console/login?next=https://evil.example/", headers=HTML)
        assert 'name="next" value="/console"' in page.text
        r = await http.post(
            "/console/login",
            content=b"\x00garbage",
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert r.status_code in (400, 403)


async def test_logins_are_throttled_per_account(shop: Shop) -> None:
    async with shop.client() as http:
        for _ in range(5):
            assert (await sign_in(http, OPERATOR[0], "not-the-password")).status_code == 401
        r = await sign_in(http, *OPERATOR)  # the right password, too late
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "Too many failed attempts" in r.text
        # Another account from the same address is not locked by these five.
        assert (await sign_in(http, *ADMIN)).status_code == 303


async def test_a_session_ends_when_the_account_is_disabled(shop: Shop) -> None:
    async with shop.client() as admin, shop.client() as operator:
        csrf = await signed_in(admin)
        await signed_in(operator, OPERATOR)
        r = await admin.post(
            "/console/operators",
            data={"csrf_token": csrf, "action": "disable", "name": OPERATOR[0]},
        )
        assert r.status_code == 303
        assert (await operator.get("/console")).status_code == 401
        assert (await sign_in(operator, *OPERATOR)).status_code == 401


async def test_an_operator_cannot_manage_accounts(shop: Shop) -> None:
    async with shop.client() as http:
        csrf = await signed_in(http, OPERATOR)
        assert (await http.get("/console/operators")).status_code == 403
        r = await http.post(
            "/console/operators",
            data={
                "csrf_token": csrf,
                "action": "add",
                "name": "mallory",
                "role": "admin",
                "password": "mallory-password",
            },
        )
        assert r.status_code == 403
        page = await http.get("/console", headers=HTML)
        assert "/console/operators" not in page.text
    async with shop.client() as http:
        csrf = await signed_in(http)
        r = await http.post(
            "/console/operators",
            data={
                "csrf_token": csrf,
                "action": "add",
                "name": "aida",
                "role": "operator",
                "password": "aida-password-1",
            },
        )
        assert r.status_code == 303
        r = await http.post(
            "/console/operators",
            data={
                "csrf_token": csrf,
                "action": "add",
                "name": "aida",
                "role": "operator",
                "password": "aida-password-1",
            },
        )
        assert r.status_code == 409
        r = await http.post(
            "/console/operators",
            data={
                "csrf_token": csrf,
                "action": "add",
                "name": "x",
                "role": "king",
                "password": "aida-password-1",
            },
        )
        assert r.status_code == 422
        r = await http.post(
            "/console/operators", data={"csrf_token": csrf, "action": "disable", "name": "ghost"}
        )
        assert r.status_code == 404
    async with shop.client() as http:
        assert (await sign_in(http, "aida", "aida-password-1")).status_code == 303


async def test_board_order_page_and_status_buttons(shop: Shop) -> None:
    order_id = await shop.order("501", address=XSS)
    async with shop.client() as http:
        csrf = await signed_in(http)
        board = (await http.get("/console", headers=HTML)).text
        assert f'href="/console/orders/{order_id}"' in board
        assert "<script>alert" not in board and "&lt;script&gt;alert" in board
        assert "<img src=x" not in board

        polled = (await http.get(f"/console/orders/new?after={order_id - 1}")).json()
        assert polled["count"] == 1 and polled["newest"] == order_id
        assert "&lt;script&gt;" in polled["html"] and "<script>" not in polled["html"]
        assert (await http.get(f"/console/orders/new?after={order_id}")).json()["count"] == 0
        assert (await http.get("/console/orders/new?after=x")).status_code == 422

        found = (await http.get("/console?q=555123456", headers=HTML)).text
        assert f"#{order_id}" in found
        assert f"#{order_id}" not in (await http.get("/console?q=nobody-here", headers=HTML)).text
        assert f"#{order_id}" in (await http.get(f"/console?q={order_id}", headers=HTML)).text
        assert (
            f"#{order_id}" not in (await http.get("/console?status=delivered", headers=HTML)).text
        )
        assert (await http.get("/console?status=lost", headers=HTML)).status_code == 422
        assert (await http.get("/console?from=yesterday", headers=HTML)).status_code == 422

        page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
        assert "<script>alert" not in page
        assert "Hello" in page and "Chui avenue" not in page  # the conversation, both ways
        assert "bottles" in page.lower()
        for status in ("confirmed", "in_progress", "ready", "delivered", "cancelled"):
            assert f'<button type="submit" name="status" value="{status}"' in page
        assert 'name="status" value="new"' not in page

        # CSRF: without the token nothing changes.
        r = await http.post(f"/console/orders/{order_id}/status", data={"status": "confirmed"})
        assert r.status_code == 403
        r = await http.post(
            f"/console/orders/{order_id}/status",
            data={"status": "confirmed", "csrf_token": "forged"},
        )
        assert r.status_code == 403
        assert (await shop.runtime.admin.get(order_id))["status"] == "new"  # type: ignore[index]

        r = await http.post(
            f"/console/orders/{order_id}/status",
            data={"status": "confirmed", "csrf_token": csrf, "note": "paid"},
        )
        assert r.status_code == 303 and r.headers["location"].startswith(
            f"/console/orders/{order_id}"
        )
        expected = status_notification(FLOW, "confirmed", "en", order_id=order_id)
        await wait_for(lambda: expected in shop.chat2desk.texts("501"))
        order = await shop.runtime.admin.get(order_id)
        assert order is not None and order["history"][-1]["actor"] == ADMIN[0]
        page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
        assert "by olga" in page and "paid" in page

        bad = [
            (f"/console/orders/{order_id}/status", {"status": "lost"}, 422),
            (f"/console/orders/{order_id}/status", {"status": "new"}, 409),
            ("/console/orders/999999/status", {"status": "confirmed"}, 404),
            ("/console/orders/abc/status", {"status": "confirmed"}, 404),
            (f"/console/orders/{order_id}/notes", {"text": ""}, 422),
            ("/console/orders/999999/notes", {"text": "hello"}, 404),
        ]
        for path, data, status in bad:
            r = await http.post(path, data={**data, "csrf_token": csrf})
            assert r.status_code == status, (path, data, r.text)
            assert r.json()["error"]
        assert (await http.get("/console/orders/999999")).status_code == 404
        assert (await http.get("/console/orders/abc")).status_code == 404
        assert (await http.get(f"/console/orders/{order_id}/files/0")).status_code == 404

        # A jump to a later status: one change, one notification, of the final status.
        before = len(shop.chat2desk.texts("501"))
        r = await http.post(
            f"/console/orders/{order_id}/status", data={"status": "delivered", "csrf_token": csrf}
        )
        assert r.status_code == 303
        delivered = status_notification(FLOW, "delivered", "en", order_id=order_id)
        await wait_for(lambda: delivered in shop.chat2desk.texts("501"))
        queued = await shop.runtime.db.run(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM outbox WHERE key LIKE ?", (f"status:{order_id}:%",)
            ).fetchone()[0]
        )
        assert queued == 2  # confirmed, then delivered: nothing for the steps between
        assert shop.chat2desk.texts("501")[before:] == [delivered]
        page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
        assert "orders do not change status" in page and 'name="status"' not in page
        r = await http.post(
            f"/console/orders/{order_id}/notes",
            data={"text": "call before <b>noon</b>", "csrf_token": csrf},
        )
        assert r.status_code == 303
        page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
        assert "call before &lt;b&gt;noon&lt;/b&gt;" in page
        assert not any("noon" in t for t in shop.chat2desk.texts("501"))


async def test_handoff_reply_and_handback(shop: Shop) -> None:
    await shop.customer_says("777", 0, "Hello")
    await wait_for(lambda: shop.chat2desk.texts("777"))
    await shop.customer_says("777", 1, "operator")
    await wait_for(lambda: CONNECTING in shop.chat2desk.texts("777"))  # handed off
    async with shop.client() as http:
        csrf = await signed_in(http)
        page = (await http.get("/console/handoffs", headers=HTML)).text
        assert "/console/handoffs/chat2desk/777" in page and "waiting" in page
        page = (await http.get("/console/handoffs/chat2desk/777", headers=HTML)).text
        assert "operator" in page
        nonce = page.split('name="nonce" value="')[1].split('"')[0]
        # The open conversation's poll: what was logged after the last message it shows.
        polled = (await http.get("/console/conversations/chat2desk/777/messages?after=0")).json()
        assert polled["count"] >= 3 and "operator" in polled["html"]
        later = await http.get(
            f"/console/conversations/chat2desk/777/messages?after={polled['last']}"
        )
        assert later.json() == {"count": 0, "last": polled["last"], "html": ""}
        bad = await http.get("/console/conversations/chat2desk/777/messages?after=-1")
        assert bad.status_code == 422
        for _ in range(2):  # a double submit is sent once
            r = await http.post(
                "/console/handoffs/chat2desk/777/reply",
                data={"csrf_token": csrf, "nonce": nonce, "text": "Hi, this is Olga"},
            )
            assert r.status_code == 303
        await wait_for(lambda: "Hi, this is Olga" in shop.chat2desk.texts("777"))
        assert shop.chat2desk.texts("777").count("Hi, this is Olga") == 1
        for _ in range(100):  # logged by the sender once delivered
            page = (await http.get("/console/handoffs/chat2desk/777", headers=HTML)).text
            if "Hi, this is Olga" in page:
                break
        assert "· operator" in page
        r = await http.post(
            "/console/handoffs/chat2desk/777/reply",
            data={"csrf_token": csrf, "nonce": "short", "text": "x"},
        )
        assert r.status_code == 422
        r = await http.post(
            "/console/handoffs/chat2desk/777/reply", data={"nonce": nonce, "text": "x"}
        )
        assert r.status_code == 403

        before = len(shop.chat2desk.texts("777"))
        r = await http.post("/console/handoffs/chat2desk/777/handback", data={"csrf_token": csrf})
        assert r.status_code == 303
        await wait_for(lambda: len(shop.chat2desk.texts("777")) > before)
        assert "Let's continue" in shop.chat2desk.texts("777")[before]
        r = await http.post("/console/handoffs/chat2desk/777/handback", data={"csrf_token": csrf})
        assert r.status_code == 404
        r = await http.post(
            "/console/handoffs/chat2desk/777/reply",
            data={"csrf_token": csrf, "nonce": "another-nonce-1", "text": "late"},
        )
        assert r.status_code == 409
        assert (await http.get("/console/handoffs/chat2desk/nobody")).status_code == 404


async def test_dead_letters_replay_and_delete(shop: Shop) -> None:
    shop.chat2desk.fail_client("888", status=400)  # a permanent error: dead-lettered at once
    await shop.customer_says("888", 0, "Hello")
    await wait_for(lambda: shop.chat2desk.attempts >= 1)
    async with shop.client() as http:
        csrf = await signed_in(http)

        async def letters() -> list[str]:
            page = (await http.get("/console/dead-letters", headers=HTML)).text
            return page.split('name="id" value="')[1::2]

        await wait_for(lambda: shop.chat2desk.attempts >= 1)
        for _ in range(100):
            if await letters():
                break
        found = await letters()
        assert found
        page = (await http.get("/console/dead-letters", headers=HTML)).text
        assert "address" in page.lower()  # the text the customer did not get
        first = found[0].split('"')[0]

        # GET /status tells it too (a console session or ADMIN_TOKEN).
        status = (await http.get("/status")).json()
        assert status["profile"] == "embedded" and status["dead_letters"]["last_hour"] >= 1
        assert status["queues"]["dead_letter"] >= 1 and status["uptime_seconds"] >= 0
        assert status["channels"]["chat2desk"]["circuit"] == "closed"
        assert "400" in status["channels"]["chat2desk"]["last_error"]
        assert "oldest_waiting_reply_seconds" in status
        async with httpx.AsyncClient(base_url=shop.url) as anonymous:
            assert (await anonymous.get("/status")).status_code == 401
            r = await anonymous.get("/status", headers={"Authorization": "Bearer s3cret-admin"})
            assert r.status_code == 200 and r.json()["version"]
        assert (
            await http.post("/console/dead-letters/replay", data={"id": first})
        ).status_code == 403
        assert (
            await http.post("/console/dead-letters/replay", data={"csrf_token": csrf, "id": "x"})
        ).status_code == 422
        assert (
            await http.post(
                "/console/dead-letters/delete", data={"csrf_token": csrf, "id": "999999"}
            )
        ).status_code == 404

        shop.chat2desk.reset()
        r = await http.post("/console/dead-letters/replay", data={"csrf_token": csrf, "id": first})
        assert r.status_code == 303
        await wait_for(lambda: shop.chat2desk.texts("888"))

        shop.chat2desk.fail_client("888", status=400)
        await shop.customer_says("888", 1, "Chui 1")
        for _ in range(200):
            if await letters():
                break
        r = await http.post("/console/dead-letters/delete", data={"csrf_token": csrf, "all": "1"})
        assert r.status_code == 303
        assert await letters() == []


async def test_stats_csv_and_api(shop: Shop) -> None:
    first = await shop.order("601", address="ул. Киевская 5")
    await shop.order("602")
    async with shop.client() as http:
        await signed_in(http)
        page = await http.get("/console/stats?period=7d", headers=HTML)
        assert page.status_code == 200 and "<svg" in page.text and "WAITING_ADDRESS" in page.text
        assert (await http.get("/console/stats?period=forever", headers=HTML)).status_code == 422
        via_session = (await http.get("/api/stats")).json()
        assert via_session["orders"] == 2 and via_session["completed"] == 2
        assert via_session["conversion"] == 1.0

        r = await http.get("/console/orders.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.content.startswith("\ufeff".encode())
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert [int(row["order_id"]) for row in rows] == [first, first + 1]
        assert rows[0]["address"] == "ул. Киевская 5" and rows[0]["quantity"] == "3"
        only_new = await http.get("/console/orders.csv?status=delivered")
        assert len(only_new.content.decode("utf-8-sig").splitlines()) == 1
        assert (await http.get("/console/orders.csv?status=lost")).status_code == 422
        assert (await http.get("/console/orders.csv?from=12/01/2026")).status_code == 422

    async with httpx.AsyncClient(base_url=shop.url) as api:
        r = await api.get("/api/stats?period=24h", headers={"Authorization": "Bearer s3cret-admin"})
        assert r.status_code == 200 and r.json()["orders"] == 2
        r = await api.get("/api/stats", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        # The admin JSON API keeps working with ADMIN_TOKEN.
        r = await api.get("/api/orders", headers={"Authorization": "Bearer s3cret-admin"})
        assert len(r.json()["orders"]) == 2


async def test_talking_to_a_customer_from_the_order_page_hands_them_off(shop: Shop) -> None:
    order_id = await shop.order("901")
    async with shop.client() as http:
        csrf = await signed_in(http)
        page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
        assert f'action="/console/orders/{order_id}/handoff"' in page
        assert (await http.post(f"/console/orders/{order_id}/handoff")).status_code == 403
        r = await http.post(f"/console/orders/{order_id}/handoff", data={"csrf_token": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/console/handoffs/chat2desk/901"
        again = await http.post(f"/console/orders/{order_id}/handoff", data={"csrf_token": csrf})
        assert again.status_code == 303  # already with a person: nothing new
        assert (
            await http.post("/console/orders/999999/handoff", data={"csrf_token": csrf})
        ).status_code == 404

        # The bot is silent for the customer now: their message is logged, not answered.
        sent = len(shop.chat2desk.texts("901"))
        await shop.customer_says("901", 10, "where is my driver?")
        for _ in range(200):
            page = (await http.get("/console/handoffs/chat2desk/901", headers=HTML)).text
            if "where is my driver?" in page:
                break
        assert "where is my driver?" in page and "Hand back to the bot" in page
        pending = await shop.runtime.db.run(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM outbox WHERE client_id = '901' AND status = 'pending'"
            ).fetchone()[0]
        )
        assert pending == 0 and len(shop.chat2desk.texts("901")) == sent

        r = await http.post("/console/handoffs/chat2desk/901/handback", data={"csrf_token": csrf})
        assert r.status_code == 303
        await wait_for(lambda: len(shop.chat2desk.texts("901")) > sent)
        # The order is done, so there is no question to resume: the default language.
        resumed = {flow_text(FLOW, "handoff_resumed", language) for language in ("ru", "en")}
        assert any(text in shop.chat2desk.texts("901")[sent] for text in resumed)


GET_ROUTES = [
    "/console",
    "/console/orders/new?after=0",
    "/console/orders/1",
    "/console/orders/1/files/0",
    "/console/orders.csv",
    "/console/handoffs",
    "/console/handoffs/chat2desk/1",
    "/console/conversations/chat2desk/1/messages?after=0",
    "/console/dead-letters",
    "/console/stats",
    "/console/operators",
    "/api/stats",
    "/status",
]
POST_ROUTES = [
    "/console/logout",
    "/console/orders/1/status",
    "/console/orders/1/notes",
    "/console/orders/1/handoff",
    "/console/handoffs/chat2desk/1/reply",
    "/console/handoffs/chat2desk/1/handback",
    "/console/dead-letters/replay",
    "/console/dead-letters/delete",
    "/console/operators",
]


async def test_every_route_wants_a_session_and_every_post_a_csrf_token(shop: Shop) -> None:
    async with shop.client() as http:
        for path in GET_ROUTES:
            r = await http.get(path)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
            r = await http.get(path, headers=HTML)
            assert r.status_code == 303 and r.headers["location"].startswith(
                "/console/login?next="
            ), path
        for path in POST_ROUTES:
            r = await http.post(path, data={"status": "confirmed", "text": "x", "all": "1"})
            assert r.status_code == 401, path
        await signed_in(http)
        for path in POST_ROUTES:
            for data in ({}, {"csrf_token": "forged"}):
                r = await http.post(
                    path, data={**data, "status": "confirmed", "text": "x", "all": "1"}
                )
                assert r.status_code == 403 and r.json()["error"] in ("csrf", "forbidden"), path
        # Pages carry the strict policy, errors included.
        for path in ("/console", "/console/orders/999"):
            r = await http.get(path, headers=HTML)
            assert "script-src 'self'" in r.headers["content-security-policy"], path


async def test_an_orders_model_file_downloads(shop: Shop, tmp_path: Path) -> None:
    order_id = await shop.order("950")
    stored = tmp_path / "0a1b.stl"
    stored.write_bytes(b"solid cube\nendsolid cube\n")

    def add_file(conn: Any) -> None:
        conn.execute(
            "INSERT INTO order_files (order_id, position, name, checksum, size, format, path,"
            " created_at) VALUES (?, 0, ?, '0a1b', ?, 'stl', ?, 0)",
            (order_id, 'my "cube"/../x.stl', stored.stat().st_size, str(stored)),
        )

    await shop.runtime.db.run(add_file)
    async with shop.client() as http:
        await signed_in(http)
        page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
        assert f'href="/console/orders/{order_id}/files/0"' in page
        r = await http.get(f"/console/orders/{order_id}/files/0")
        assert r.status_code == 200 and r.content == b"solid cube\nendsolid cube\n"
        disposition = r.headers["content-disposition"]
        assert (
            disposition.startswith("attachment;")
            and "/" not in disposition
            and '"cube"' not in disposition
        )
        assert (await http.get(f"/console/orders/{order_id}/files/1")).status_code == 404
        stored.unlink()
        assert (await http.get(f"/console/orders/{order_id}/files/0")).status_code == 404


async def test_a_cancellation_reason_can_be_told_to_the_customer(shop: Shop) -> None:
    order_id = await shop.order("960")
    async with shop.client() as http:
        csrf = await signed_in(http)
        r = await http.post(
            f"/console/orders/{order_id}/status",
            data={
                "csrf_token": csrf,
                "status": "cancelled",
                "note": "No trucks today",
                "tell": "1",
            },
        )
        assert r.status_code == 303
        expected = status_notification(FLOW, "cancelled", "en", order_id=order_id)
        await wait_for(lambda: expected + "\nNo trucks today" in shop.chat2desk.texts("960"))
        page = (await http.get(f"/console/orders/{order_id}", headers=HTML)).text
        assert "No trucks today (told the customer)" in page
