"""Crash safety: SIGKILL `orderbot run` in the middle of a burst of webhooks, restart it, and
check that every acknowledged message was answered exactly once and no order was doubled."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from orderbot.channels.chat2desk import render_buttons
from orderbot.dialog.engine import step
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions
from orderbot.worker import merge_replies
from tests.e2e.test_e2e import orders
from tests.fakes.chat2desk import ThreadedFakeChat2Desk
from tests.support.processes import BotProcess, wait_for

pytestmark = pytest.mark.slow

CLIENTS = 60
DIALOG = ["Здравствуйте", "ул. Ибраимова {n}, кв. 3", "0555 12 34 {n:02d}", "{q} бутыли", "да"]


def messages_of(n: int) -> list[str]:
    return [t.format(n=n, q=n % 9 + 1) for t in DIALOG]


def expected_replies(n: int) -> list[str]:
    """What the pure engine answers to client ``n``'s messages, as Chat2Desk receives it."""
    flow, state, texts = load_flow("water"), None, []
    for text in messages_of(n):
        result = step(flow, state, text, time.time(), options=DialogOptions())
        state = result.state
        texts.extend(render_buttons(r.text, r.buttons) for r in merge_replies(result.replies))
    return texts


def test_sigkill_mid_burst_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with ThreadedFakeChat2Desk() as fake:
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'orderbot.db'}",
            "CHAT2DESK_API_URL": fake.url,
            "CHAT2DESK_API_TOKEN": "t",
            "OUTBOUND_RATE_LIMIT": "600000",
            "LOG_LEVEL": "WARNING",
        }
        bot = BotProcess(env, log_path=tmp_path / "bot.log").start()
        acked = 0
        lock = threading.Lock()

        def converse(n: int) -> None:
            """One client, messages in order; each resent (as Chat2Desk does) until a 200."""
            nonlocal acked
            with httpx.Client(base_url=bot.url, timeout=5) as client:
                for i, text in enumerate(messages_of(n)):
                    payload = {"message_id": f"{n}-{i}", "client_id": 9000 + n, "text": text}
                    while True:
                        try:
                            if client.post("/webhook/chat2desk", json=payload).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        time.sleep(0.05)
                    with lock:
                        acked += 1

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            futures = [pool.submit(converse, n) for n in range(CLIENTS)]
            for threshold in (CLIENTS, CLIENTS * 3):  # two crashes: early and late in the burst
                assert wait_for(lambda t=threshold: acked >= t, timeout=120)
                bot.kill()
                bot = BotProcess(env, log_path=tmp_path / "bot.log", port=bot.port).start()
            for future in futures:
                future.result(timeout=120)

        total = sum(len(expected_replies(n)) for n in range(CLIENTS))
        try:
            assert wait_for(lambda: len(fake.received) >= total, timeout=120), bot.log()
            time.sleep(1.0)  # anything doubled would arrive now
            placed = orders(env)
            received = list(fake.received)
        finally:
            bot.terminate()

    assert acked == CLIENTS * len(DIALOG)
    by_client = {str(o["client_id"]): o for o in placed}
    assert len(placed) == CLIENTS == len(by_client), "an order is missing or doubled"
    for n in range(CLIENTS):
        client = str(9000 + n)
        order = by_client[client]
        expected = [t.replace("{order_id}", str(order["id"])) for t in expected_replies(n)]
        got = [r["text"] for r in received if str(r["client_id"]) == client]
        assert got == expected, f"client {client}: replies lost, doubled or out of order"
        assert order["quantity"] == n % 9 + 1
        assert re.fullmatch(r"\+996555123\d{3}", str(order["phone"]))
