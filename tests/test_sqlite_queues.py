"""The embedded queues, dead-letter queue and step store on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from orderbot.errors import StorageError
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.orders.models import OrderRecord
from orderbot.queues.sqlite import (
    SqliteDeadLetterQueue,
    SqliteInboundQueue,
    SqliteOutbox,
    Wakeup,
)
from orderbot.state.base import OutcomeRecord, StepCommit
from orderbot.state.sqlite import SqliteStepStore
from orderbot.storage.sqlite import SqliteDatabase


def inbound(client: str, mid: str, text: str = "hi", channel: str = "chat2desk") -> InboundMessage:
    return InboundMessage(
        channel=channel, client_id=client, message_id=mid, text=text, received_at=time.time()
    )


def reply(key: str, client: str = "1", text: str = "ok") -> OutboundMessage:
    return OutboundMessage(key=key, channel="chat2desk", client_id=client, text=text)


async def test_put_is_deduplicated_by_message_id(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)
    assert await queue.put(inbound("1", "m1")) is True
    assert await queue.put(inbound("1", "m1", text="resent")) is False
    assert await queue.put(inbound("1", "m1", channel="telegram")) is True  # ids are per channel
    assert (await queue.depth()).inbound == 2


async def test_concurrent_puts_share_commits(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)
    before = database.commits
    results = await asyncio.gather(*(queue.put(inbound(str(i), f"m{i}")) for i in range(300)))
    assert all(results)
    assert (await queue.depth()).inbound == 300
    # group commit: far fewer transactions than messages
    assert database.commits - before < 100


async def test_fetch_in_arrival_order_counts_deliveries(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)
    for i in range(5):
        await queue.put(inbound(str(i % 2), f"m{i}"))
    first = await queue.fetch(3)
    assert [d.message.message_id for d in first] == ["m0", "m1", "m2"]
    assert all(d.deliveries == 1 for d in first)
    rest = await queue.fetch(10)
    assert [d.message.message_id for d in rest] == ["m3", "m4"]
    assert await queue.fetch(10) == []
    # a new process (a restart) sees every unfinished message again, counted once more
    again = await SqliteInboundQueue(database).fetch(10)
    assert [d.deliveries for d in again] == [2] * 5


async def test_fetch_only_serves_its_channels(database: SqliteDatabase) -> None:
    await SqliteInboundQueue(database).put(inbound("1", "a", channel="local"))
    await SqliteInboundQueue(database).put(inbound("1", "b", channel="chat2desk"))
    local = await SqliteInboundQueue(database, channels=["local"]).fetch(10)
    assert [d.message.message_id for d in local] == ["a"]


async def test_wakeup_on_put(database: SqliteDatabase) -> None:
    wakeup = Wakeup()
    queue = SqliteInboundQueue(database, wakeup=wakeup)
    waiter = asyncio.create_task(queue.wait(5))
    await asyncio.sleep(0)
    started = time.monotonic()
    await queue.put(inbound("1", "m"))
    await waiter
    assert time.monotonic() - started < 1


async def test_failing_job_does_not_undo_its_batch(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    results = await asyncio.gather(
        queue.put(inbound("1", "a")),
        database.run(broken),
        database.run(broken, savepoint=False),  # one failing statement, no savepoint
        queue.put(inbound("1", "b")),
        return_exceptions=True,
    )
    assert results[0] is True and results[3] is True
    assert isinstance(results[1], StorageError) and isinstance(results[2], StorageError)
    assert (await queue.depth()).inbound == 2


async def test_outbox_claim_order_exclude_and_results(database: SqliteDatabase) -> None:
    store = SqliteStepStore(database)
    queue = SqliteInboundQueue(database)
    await queue.put(inbound("1", "m1"))
    (delivery,) = await queue.fetch(1)
    await store.commit_step(
        StepCommit(
            delivery=delivery,
            state=b'{"s":1}',
            state_name="X",
            replies=(reply("k1"), reply("k2"), reply("k3")),
        )
    )
    outbox = SqliteOutbox(database)
    items = await outbox.claim(10, set())
    assert [i.message.key for i in items] == ["k1", "k2", "k3"]
    assert [i.message.key for i in await outbox.claim(10, {items[0].handle})] == ["k2", "k3"]

    await outbox.mark_sent(items[0].handle)
    await outbox.reschedule(items[1].handle, 1, time.time() + 60, "ServerError: 500")
    await outbox.dead_letter(items[2].handle, 50, "ServerError: 500")
    pending = await outbox.claim(10, set())
    assert [(i.message.key, i.attempts, i.last_error) for i in pending] == [
        ("k2", 1, "ServerError: 500")
    ]
    assert pending[0].not_before > time.time()

    dlq = SqliteDeadLetterQueue(database)
    (letter,) = await dlq.list()
    assert (letter.kind, letter.key, letter.attempts, letter.last_error) == (
        "outbox",
        "k3",
        50,
        "ServerError: 500",
    )
    logged = await database.run(
        lambda c: c.execute(
            "SELECT message_key, success, error FROM message_logs WHERE direction='out' ORDER BY id"
        ).fetchall()
    )
    assert logged == [("k1", 1, None), ("k3", 0, "ServerError: 500")]

    assert await dlq.replay([letter.id]) == 1
    assert await dlq.list() == []
    replayed = await outbox.claim(10, set())
    assert [(i.message.key, i.attempts) for i in replayed] == [("k2", 1), ("k3", 0)]


async def test_dead_inbound_message_is_replayed_onto_the_queue(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)
    await queue.put(inbound("7", "poison"))
    (delivery,) = await queue.fetch(1)
    await queue.dead_letter(delivery, "crashed 6 times")
    assert (await queue.depth()).inbound == 0
    dlq = SqliteDeadLetterQueue(database)
    assert await queue.put(inbound("7", "poison")) is False  # still a known id
    assert await dlq.replay(None) == 1
    (again,) = await queue.fetch(5)  # the running worker sees it: a new row
    assert again.message.message_id == "poison"
    assert again.deliveries == 1
    assert await dlq.purge() == 0


async def test_commit_step_is_atomic_and_idempotent(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)
    store = SqliteStepStore(database)
    await queue.put(inbound("5", "yes-msg"))
    (delivery,) = await queue.fetch(1)
    commit = StepCommit(
        delivery=delivery,
        state=None,
        state_name="-",
        replies=(reply("chat2desk:yes-msg:0", "5", "Order {order_id} accepted"),),
        order=OrderRecord(
            idempotency_key="chat2desk:5:yes-msg",
            channel="chat2desk",
            client_id="5",
            source="whatsapp",
            phone="+996555123456",
            address="Bishkek, Chui 1",
            quantity=2,
            language="en",
        ),
        outcomes=(OutcomeRecord("completed", "WAITING_CONFIRMATION", 5, 1.0, 11.0),),
    )
    order_id = await store.commit_step(commit)
    assert isinstance(order_id, int)
    # the same step again (as after a crash between commit and ack): nothing doubles
    assert await store.commit_step(commit) is None
    counts = await database.run(
        lambda c: [
            c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("orders", "outbox", "dialog_outcomes", "message_logs")
        ]
    )
    assert counts == [1, 1, 1, 1]
    (item,) = await SqliteOutbox(database).claim(5, set())
    assert item.message.text == f"Order {order_id} accepted"
    outcome = await database.run(
        lambda c: c.execute(
            "SELECT outcome, duration_seconds, order_id FROM dialog_outcomes"
        ).fetchone()
    )
    assert outcome == ("completed", 10.0, order_id)


async def test_state_round_trip_and_cache(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)
    store = SqliteStepStore(database)
    assert await store.load_state("chat2desk:9") is None
    await queue.put(inbound("9", "a"))
    (d,) = await queue.fetch(1)
    await store.commit_step(StepCommit(delivery=d, state=b"S1", state_name="X", replies=()))
    assert await store.load_state("chat2desk:9") == b"S1"
    assert await SqliteStepStore(database).load_state("chat2desk:9") == b"S1"  # from the file


async def test_prune_forgets_old_processed_ids(database: SqliteDatabase) -> None:
    queue = SqliteInboundQueue(database)
    await queue.put(inbound("1", "old"))
    (d,) = await queue.fetch(1)
    await SqliteStepStore(database).commit_step(
        StepCommit(delivery=d, state=None, state_name="-", replies=())
    )
    assert await queue.prune(older_than=3600) == 0
    assert await queue.prune(older_than=-1) == 1
    assert await queue.put(inbound("1", "old")) is True


async def test_closed_database_refuses_work(db_path) -> None:  # type: ignore[no-untyped-def]
    database = SqliteDatabase(db_path)
    await database.open()
    await database.aclose()
    await database.aclose()  # idempotent
    with pytest.raises(StorageError):
        await database.run(lambda c: None)


@pytest.mark.parametrize(("setting", "pragma"), [("normal", 1), ("full", 2)])
async def test_synchronous_setting_reaches_sqlite(db_path, setting: str, pragma: int) -> None:  # type: ignore[no-untyped-def]
    # full: every commit batch is fsynced, so an acknowledged webhook also survives power loss
    async with SqliteDatabase(db_path, synchronous=setting) as database:  # type: ignore[arg-type]
        mode = await database.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        journal = await database.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    assert (mode, journal) == (pragma, "wal")


def test_a_dead_letter_tells_its_text() -> None:
    from orderbot.queues.base import DeadLetter

    def letter(payload: bytes) -> DeadLetter:
        return DeadLetter(1, "outbox", "k", "chat2desk", "7", payload, 3, "err", 0.0)

    assert letter(b'{"key": "k", "text": "Your order is ready"}').text == "Your order is ready"
    batch = b'[{"text": "first"}, {"text": "second"}, {"no": "text"}]'
    assert letter(batch).text == "first\nsecond"
    assert letter(b"\xff not json").text == ""
