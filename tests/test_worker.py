"""The worker on the embedded store: whole dialogs, per-client order, failures, poison messages."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest

from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions
from orderbot.errors import DataRejected
from orderbot.messages import InboundMessage
from orderbot.queues.sqlite import SqliteDeadLetterQueue, SqliteInboundQueue, SqliteOutbox
from orderbot.state.base import StepCommit
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage.sqlite import SqliteDatabase
from orderbot.worker import Worker

FLOW = load_flow("water")


def make_worker(database: SqliteDatabase, **kwargs: Any) -> tuple[Worker, SqliteInboundQueue]:
    queue = SqliteInboundQueue(database)
    worker = Worker(
        queue,
        SqliteStepStore(database),
        FLOW,
        options=DialogOptions(default_language="ru"),
        poll_interval=0.05,
        **kwargs,
    )
    return worker, queue


async def run_until_idle(worker: Worker, queue: SqliteInboundQueue, expected: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + 20
    while worker.handled < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await task


def message(client: str, mid: str, text: str) -> InboundMessage:
    return InboundMessage(
        channel="chat2desk",
        client_id=client,
        message_id=mid,
        text=text,
        received_at=time.time(),
        route={"transport": "whatsapp", "channel_id": "3"},
    )


async def replies(database: SqliteDatabase) -> list[dict[str, Any]]:
    rows = await database.run(
        lambda c: c.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    )
    return [orjson.loads(r[0]) for r in rows]


async def test_whole_dialog_stores_one_order_and_tells_its_number(database: SqliteDatabase) -> None:
    worker, queue = make_worker(database)
    texts = ["Hello", "Chui avenue 120, apt 5", "my number is 0555 123 456", "3 bottles", "yes"]
    for i, text in enumerate(texts):
        await queue.put(message("42", f"m{i}", text))
    await run_until_idle(worker, queue, len(texts))

    orders = await database.run(
        lambda c: c.execute(
            "SELECT id, phone, address, quantity, status, language, source, idempotency_key FROM orders"
        ).fetchall()
    )
    assert len(orders) == 1
    order_id, phone, address, quantity, status, language, source, key = orders[0]
    assert (phone, address, quantity, status, language, source) == (
        "+996555123456",
        "Chui avenue 120, apt 5",
        3,
        "new",
        "en",
        "whatsapp",
    )
    assert key == "chat2desk:42:m4"
    sent = await replies(database)
    assert all(r["route"] == {"transport": "whatsapp", "channel_id": "3"} for r in sent)
    assert str(order_id) in sent[-1]["text"]
    assert "{order_id}" not in sent[-1]["text"]
    outcome = await database.run(
        lambda c: c.execute("SELECT outcome, order_id FROM dialog_outcomes").fetchall()
    )
    assert outcome == [("completed", order_id)]
    logged = await database.run(
        lambda c: c.execute("SELECT count(*) FROM message_logs WHERE direction = 'in'").fetchone()[
            0
        ]
    )
    assert logged == 5
    assert (
        await database.run(lambda c: c.execute("SELECT count(*) FROM dialog_states").fetchone()[0])
        == 0
    )


async def test_each_clients_messages_are_handled_in_arrival_order(database: SqliteDatabase) -> None:
    worker, queue = make_worker(database, concurrency=8)
    clients = 40
    dialog = ["привет", "ул. Токтогула {c}", "0555 123 {n:03d}", "{q}", "да"]
    for i, template in enumerate(dialog):  # interleaved: every client's first message, then ...
        for c in range(clients):
            text = template.format(c=c + 1, n=c, q=c % 50 + 1)
            await queue.put(message(f"c{c}", f"c{c}-{i}", text))
    await run_until_idle(worker, queue, clients * len(dialog))

    seen: dict[str, list[int]] = defaultdict(list)
    for reply in await replies(database):
        _, mid, _ = reply["key"].rsplit(":", 2)
        seen[reply["client_id"]].append(int(mid.split("-")[1]))
    assert len(seen) == clients
    for client, order in seen.items():
        assert order == sorted(order), client
        assert set(order) == set(range(len(dialog))), client
    # a step that saw a stale state (a race between two messages of one client) would lose
    # a field or the order: every client has exactly its order
    orders = await database.run(
        lambda c: c.execute("SELECT client_id, address, phone, quantity FROM orders").fetchall()
    )
    assert sorted(orders) == sorted(
        (f"c{c}", f"ул. Токтогула {c + 1}", f"+996555123{c:03d}", c % 50 + 1)
        for c in range(clients)
    )


async def test_a_failing_step_still_answers(
    database: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("flow bug")

    monkeypatch.setattr("orderbot.worker.step", broken)
    worker, queue = make_worker(database)
    await queue.put(message("1", "m1", "привет"))
    await run_until_idle(worker, queue, 1)
    (reply,) = await replies(database)
    assert "что-то пошло не так" in reply["text"]
    error = await database.run(
        lambda c: c.execute("SELECT success, error FROM message_logs").fetchone()
    )
    assert error == (0, "RuntimeError: flow bug")
    assert (await queue.depth()).inbound == 0


async def test_message_that_keeps_crashing_goes_to_dead_letters(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)
    await queue.put(message("9", "poison", "привет"))
    for _ in range(3):  # three processes took it and died before committing
        await SqliteInboundQueue(database).fetch(10)
    worker, queue = make_worker(database, max_deliveries=3)
    await run_until_idle(worker, queue, 1)
    (letter,) = await SqliteDeadLetterQueue(database).list()
    assert (letter.kind, letter.key, letter.attempts) == ("inbound", "chat2desk:poison", 4)
    assert "4 times" in letter.last_error
    (reply,) = await replies(database)  # the customer still hears from us
    assert "повторите" in reply["text"]
    assert await SqliteOutbox(database).claim(5, set())


@pytest.mark.parametrize(
    "failure",
    [
        DataRejected("PostgreSQL refused the data: StringDataRightTruncationError"),
        RuntimeError("a bug past the dialog's error handling"),
    ],
)
async def test_a_step_failing_the_same_way_every_time_is_dead_lettered_and_its_client_goes_on(
    database: SqliteDatabase, failure: Exception
) -> None:
    worker, queue = make_worker(database, max_deliveries=2)
    commit_step = worker._store.commit_step

    async def refusing(commit: StepCommit) -> int | None:
        if commit.delivery.message.message_id == "refused" and commit.error is None:
            raise failure
        return await commit_step(commit)

    worker._store.commit_step = refusing  # type: ignore[method-assign]
    await queue.put(message("5", "refused", "привет"))
    await queue.put(message("5", "next", "привет"))
    await run_until_idle(worker, queue, 2)
    (letter,) = await SqliteDeadLetterQueue(database).list()
    assert (letter.key, letter.attempts) == ("chat2desk:refused", 3)
    assert f"last error: {type(failure).__name__}: {failure}" in letter.last_error
    # The client's next message was handled after it (it was not lost behind it).
    keys = [r["key"] for r in await replies(database)]
    assert keys[-1] == "chat2desk:next:0" and "chat2desk:refused:0" in keys
    assert (await queue.depth()).inbound == 0


async def test_stop_leaves_unstarted_work_on_the_queue(database: SqliteDatabase) -> None:
    worker, queue = make_worker(database, concurrency=1)
    for i in range(200):
        await queue.put(message(str(i), f"m{i}", "привет"))
    stop = asyncio.Event()
    stop.set()  # stopped before it took anything
    await worker.run(stop)
    assert (await queue.depth()).inbound == 200


def test_replies_of_a_step_are_merged_up_to_each_button_set() -> None:
    from orderbot.dialog.models import Reply
    from orderbot.worker import merge_replies

    assert merge_replies((Reply("Hello!"), Reply("Address?"))) == (Reply("Hello!\n\nAddress?"),)
    assert merge_replies(
        (Reply("Summary"), Reply("Right?", ("Yes", "No")), Reply("Or type /help"))
    ) == (Reply("Summary\n\nRight?", ("Yes", "No")), Reply("Or type /help"))
    assert merge_replies(()) == ()
