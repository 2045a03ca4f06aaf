"""End to end: the real `orderbot run` process, real HTTP, a fake Chat2Desk API."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.fakes.chat2desk import ThreadedFakeChat2Desk
from tests.support.processes import BotProcess, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def fake() -> Iterator[ThreadedFakeChat2Desk]:
    with ThreadedFakeChat2Desk(token="e2e-token") as fake:
        yield fake


@pytest.fixture
def env(tmp_path: Path, fake: ThreadedFakeChat2Desk) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'orderbot.db'}",
        "CHAT2DESK_API_URL": fake.url,
        "CHAT2DESK_API_TOKEN": "e2e-token",
        "OUTBOUND_RATE_LIMIT": "60000",
        "LOG_LEVEL": "INFO",
        "SHUTDOWN_TIMEOUT": "5",
    }


@pytest.fixture
def bot(env: dict[str, str], tmp_path: Path) -> Iterator[BotProcess]:
    with BotProcess(env, log_path=tmp_path / "bot.log") as bot:
        yield bot


def texts_for(fake: ThreadedFakeChat2Desk, client: str) -> list[str]:
    return [r["text"] for r in fake.received if str(r["client_id"]) == client]


def say(
    bot: BotProcess, fake: ThreadedFakeChat2Desk, client: str, mid: str, text: str, replies: int = 1
) -> list[str]:
    before = len(texts_for(fake, client))
    payload = {
        "message_id": mid,
        "client_id": client,
        "text": text,
        "type": "from_client",
        "hook_type": "inbox",
        "transport": "whatsapp",
        "channel_id": 7,
    }
    r = httpx.post(bot.url + "/webhook/chat2desk", json=payload, timeout=5)
    assert r.status_code == 200, r.text
    assert wait_for(lambda: len(texts_for(fake, client)) >= before + replies, timeout=20), bot.log()
    return texts_for(fake, client)[before:]


def orders(env: dict[str, str]) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "orderbot", "orders", "list", "--json", "--limit", "10000"],
        env={**env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return list(orjson.loads(out.stdout))


def test_whole_conversation_in_russian(
    bot: BotProcess, fake: ThreadedFakeChat2Desk, env: dict[str, str]
) -> None:
    (first,) = say(bot, fake, "1001", "r1", "Здравствуйте")
    assert (
        first.startswith("Здравствуйте!") and "адрес" in first
    )  # greeting and question: one message
    assert "телефон" in say(bot, fake, "1001", "r2", "ул. Киевская 120, кв. 5")[0]
    assert "бутыл" in say(bot, fake, "1001", "r3", "мой номер 0555 123 456")[0].lower()
    assert "1.5" not in (re_ask := say(bot, fake, "1001", "r4", "1.5")[0]) and re_ask
    summary = say(bot, fake, "1001", "r5", "3 бутыли")[0]
    assert "ул. Киевская 120, кв. 5" in summary and "+996555123456" in summary.replace(" ", "")
    assert "1. Да" in summary and "2. Нет" in summary  # buttons as numbered text on Chat2Desk
    done = say(bot, fake, "1001", "r6", "да")[0]
    (order,) = orders(env)
    assert f"№{order['id']}" in done
    assert (
        order["phone"],
        order["address"],
        order["quantity"],
        order["language"],
        order["status"],
    ) == (
        "+996555123456",
        "ул. Киевская 120, кв. 5",
        3,
        "ru",
        "new",
    )
    sent = [r for r in fake.received if str(r["client_id"]) == "1001"]
    assert all(r["transport"] == "whatsapp" and str(r["channel_id"]) == "7" for r in sent)
    assert all(r["type"] == "to_client" and r["authorization"] == "e2e-token" for r in sent)
    assert "+996555123456" not in bot.log()  # personal data masked in logs
    assert "Киевская" not in bot.log()


def test_whole_conversation_in_english_with_cancel(
    bot: BotProcess, fake: ThreadedFakeChat2Desk, env: dict[str, str]
) -> None:
    assert "address" in say(bot, fake, "2002", "e1", "Hello")[0].lower()
    say(bot, fake, "2002", "e2", "42 Chui Avenue, apt 7")
    say(bot, fake, "2002", "e3", "+996 (555) 123-456")
    assert "manager" in say(bot, fake, "2002", "e4", "51")[0].lower()
    say(bot, fake, "2002", "e5", "two")
    assert "not placed" in say(bot, fake, "2002", "e6", "no")[0].lower()
    assert orders(env) == []
    say(bot, fake, "2002", "e7", "Hi again")
    say(bot, fake, "2002", "e8", "42 Chui Avenue, apt 7")
    say(bot, fake, "2002", "e9", "0555123456")
    say(bot, fake, "2002", "e10", "twenty five")
    say(bot, fake, "2002", "e11", "yes")
    (order,) = orders(env)
    assert (order["quantity"], order["language"]) == (25, "en")


def test_duplicates_and_echoes_are_answered_once(
    bot: BotProcess, fake: ThreadedFakeChat2Desk
) -> None:
    payload = {"message_id": 5, "client_id": 3003, "text": "привет", "type": "from_client"}
    for _ in range(3):
        assert httpx.post(bot.url + "/webhook/chat2desk", json=payload).status_code == 200
    echo = {"message_id": 6, "client_id": 3003, "text": "Здравствуйте!", "type": "to_client"}
    assert httpx.post(bot.url + "/webhook/chat2desk", json=echo).status_code == 200
    assert wait_for(lambda: len(texts_for(fake, "3003")) >= 1)
    time.sleep(0.5)
    assert len(texts_for(fake, "3003")) == 1


def test_retries_after_500_and_429(bot: BotProcess, fake: ThreadedFakeChat2Desk) -> None:
    fake.fail_next(2, status=500)
    started = time.monotonic()
    replies = say(bot, fake, "4004", "x1", "привет")
    assert len(replies) == 1
    assert time.monotonic() - started >= 2.5  # waited 1 s, then 2 s
    fake.rate_limit_next(1, retry_after=2)
    started = time.monotonic()
    say(bot, fake, "4004", "x2", "ул. Токтогула 15")
    assert time.monotonic() - started >= 1.9


def test_dead_letter_and_replay(
    bot: BotProcess, fake: ThreadedFakeChat2Desk, env: dict[str, str]
) -> None:
    fake.control({"fail_client": "5005", "status": 400})  # refused: no retry helps
    httpx.post(
        bot.url + "/webhook/chat2desk", json={"message_id": 1, "client_id": 5005, "text": "hi"}
    )

    def dead() -> list[dict[str, object]]:
        out = subprocess.run(
            [sys.executable, "-m", "orderbot", "dlq", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return list(orjson.loads(out.stdout))

    assert wait_for(lambda: len(dead()) == 1, timeout=20), bot.log()
    assert all("400" in str(d["last_error"]) for d in dead())
    assert texts_for(fake, "5005") == []
    fake.reset()
    subprocess.run(
        [sys.executable, "-m", "orderbot", "dlq", "replay", "--all"],
        env=env,
        check=True,
        timeout=60,
    )
    assert wait_for(lambda: len(texts_for(fake, "5005")) == 1, timeout=20), bot.log()
    assert "Hello" in texts_for(fake, "5005")[0]  # in order, after the replay
    assert dead() == []


def test_sigterm_finishes_and_loses_nothing(
    env: dict[str, str], tmp_path: Path, fake: ThreadedFakeChat2Desk
) -> None:
    bot = BotProcess(env, log_path=tmp_path / "bot.log").start()
    with httpx.Client(base_url=bot.url) as client:
        for i in range(200):
            r = client.post(
                "/webhook/chat2desk", json={"message_id": i, "client_id": 6000 + i, "text": "hi"}
            )
            assert r.status_code == 200
    started = time.monotonic()
    assert bot.terminate(timeout=30) == 0
    assert time.monotonic() - started < 15
    with BotProcess(env, log_path=tmp_path / "bot.log"):
        assert wait_for(lambda: len(fake.received) >= 200, timeout=30)
        time.sleep(0.5)
    per_client: dict[str, int] = {}
    for r in fake.received:
        per_client[str(r["client_id"])] = per_client.get(str(r["client_id"]), 0) + 1
    assert len(per_client) == 200
    assert set(per_client.values()) == {1}
