"""One contract for every queue and state backend: the embedded one (SQLite) and the distributed
one (RabbitMQ + Redis + PostgreSQL; skipped when those are unreachable, failed in CI)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from orderbot.dialog.models import DialogState
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.orders.models import OrderRecord
from orderbot.queues.base import InboundDelivery, OutboxItem
from orderbot.retry import RetryPolicy
from orderbot.state.base import StepCommit
from tests.distributed.conftest import Backend, RecordingChannel, eventually


def inbound(backend: Backend, client: str, mid: str, text: str = "hi") -> InboundMessage:
    return InboundMessage(
        channel="chat2desk",
        client_id=f"{backend.namespace}-{client}",
        message_id=f"{backend.namespace}-{mid}",
        text=text,
        received_at=time.time(),
    )


def reply(delivery: InboundDelivery, index: int, text: str = "ok") -> OutboundMessage:
    m = delivery.message
    return OutboundMessage(
        key=f"{m.dedupe_key}:{index}", channel=m.channel, client_id=m.client_id, text=text
    )


async def commit(
    backend: Backend, delivery: InboundDelivery, replies: int = 1, **extra: object
) -> int | None:
    order_id = await backend.store.commit_step(
        StepCommit(
            delivery=delivery,
            state=b'{"step": "X"}',
            state_name="X",
            replies=tuple(
                reply(delivery, i, f"{delivery.message.message_id}/{i}") for i in range(replies)
            ),
            **extra,  # type: ignore[arg-type]
        )
    )
    await backend.inbound.ack(delivery)
    return order_id


async def test_a_copy_of_a_message_is_processed_once(backend: Backend) -> None:
    # A messenger's redelivery, before and after the first was processed. SQLite refuses the
    # copies at once; RabbitMQ queues them and the step store recognises them.
    assert await backend.inbound.put(inbound(backend, "1", "m1")) is True
    await backend.inbound.put(inbound(backend, "1", "m1", "resent early"))
    (first,) = await backend.fetch_n(1)
    assert first.message.text == "hi"
    assert first.deliveries == 1
    assert await backend.store.load(first.message) == (None, False)
    await commit(backend, first)
    await backend.inbound.put(inbound(backend, "1", "m1", "resent late"))
    copies = await backend.fetch_n(2, timeout=0.5)
    assert [c.message.text for c in copies] in ([], ["resent early", "resent late"])
    for copy in copies:
        _, processed = await backend.store.load(copy.message)
        redone = await backend.store.commit_step(
            StepCommit(delivery=copy, state=b"{}", state_name="X", replies=())
        )
        assert processed and redone is None
        await backend.inbound.ack(copy)
    assert await backend.store.load_state(first.message.client_key) == b'{"step": "X"}'
    assert await backend.fetch_n(1, timeout=0.3) == []


async def test_per_client_arrival_order(backend: Backend) -> None:
    sent: dict[str, list[str]] = defaultdict(list)
    for i in range(40):
        client = str(i % 5)
        message = inbound(backend, client, f"m{i}")
        sent[message.client_id].append(message.message_id)
        assert await backend.inbound.put(message)
    got: dict[str, list[str]] = defaultdict(list)
    for d in await backend.fetch_n(40):
        got[d.message.client_id].append(d.message.message_id)
    assert got == sent


async def test_unacked_message_is_redelivered_after_a_crash(backend: Backend) -> None:
    await backend.inbound.put(inbound(backend, "1", "m1"))
    (first,) = await backend.fetch_n(1)
    assert first.deliveries == 1
    await backend.restart()  # crashed mid-step: nothing committed, nothing acked
    (again,) = await backend.fetch_n(1)
    assert again.message.message_id == first.message.message_id
    assert again.deliveries == 2
    await commit(backend, again)
    await backend.restart()
    assert await backend.fetch_n(1, timeout=0.5) == []


async def test_poison_message_goes_to_the_dead_letter_queue_and_back(backend: Backend) -> None:
    await backend.inbound.put(inbound(backend, "7", "poison"))
    (delivery,) = await backend.fetch_n(1)
    await backend.inbound.dead_letter(delivery, "crashed 6 times")
    await backend.restart()
    assert await backend.fetch_n(1, timeout=0.5) == []
    letters = await backend.dead_letters.list()
    assert [(d.kind, d.key, d.last_error) for d in letters] == [
        ("inbound", delivery.message.dedupe_key, "crashed 6 times")
    ]
    assert await backend.dead_letters.list() == letters  # listing does not consume
    assert await backend.dead_letters.replay([letters[0].id]) == 1
    (again,) = await backend.fetch_n(1)
    assert again.message.message_id == delivery.message.message_id
    assert await backend.dead_letters.list() == []


async def test_one_dead_letter_is_deleted_and_the_others_kept_in_order(backend: Backend) -> None:
    for n in range(3):
        await backend.inbound.put(inbound(backend, str(20 + n), f"poison {n}"))
    for delivery in await backend.fetch_n(3):
        await backend.inbound.dead_letter(delivery, "crashed 6 times")
    letters = await backend.dead_letters.list()
    assert len(letters) == 3
    assert await backend.dead_letters.delete([letters[1].id]) == 1
    assert await backend.dead_letters.delete([letters[1].id]) == 0  # gone already
    assert await backend.dead_letters.list() == [letters[0], letters[2]]
    assert await backend.dead_letters.delete(None) == 2
    assert await backend.dead_letters.list() == []
    await backend.restart()
    assert await backend.fetch_n(1, timeout=0.5) == []  # deleted, not replayed


async def test_an_unreadable_dead_letter_is_kept_and_the_others_replayed(
    backend: Backend,
) -> None:
    garbage = b'{"not": "a message"}'
    if backend.name == "sqlite":
        await backend.db.run(  # type: ignore[attr-defined]
            lambda c: c.execute(
                "INSERT INTO dead_letters (kind, key, channel, client_id, payload, attempts,"
                " last_error, created_at) VALUES ('inbound', 'x', '?', '?', ?, 1, 'bad', 0)",
                (garbage,),
            )
        )
    else:
        await backend.runtime.broker.publish_dead_letter(  # type: ignore[attr-defined]
            kind="inbound",
            key="x",
            channel="?",
            client_id="?",
            payload=garbage,
            attempts=1,
            error="bad",
        )
    await backend.inbound.put(inbound(backend, "9", "poison"))
    (delivery,) = await backend.fetch_n(1)
    await backend.inbound.dead_letter(delivery, "crashed 6 times")
    assert await backend.dead_letters.replay(None) == 1
    (again,) = await backend.fetch_n(1)
    assert again.message.message_id == delivery.message.message_id
    (kept,) = await backend.dead_letters.list()
    assert (kept.key, kept.payload) == ("x", garbage)


async def test_step_commit_is_idempotent_when_redone(backend: Backend) -> None:
    await backend.inbound.put(inbound(backend, "5", "yes"))
    (delivery,) = await backend.fetch_n(1)
    client = delivery.message.client_id
    order = OrderRecord(
        idempotency_key=f"chat2desk:{client}:{delivery.message.message_id}",
        channel="chat2desk",
        client_id=client,
        source="whatsapp",
        phone="+996555123456",
        address="Chui 1",
        quantity=2,
        language="en",
    )
    step = StepCommit(
        delivery=delivery,
        state=b"S1",
        state_name="DONE",
        replies=(
            OutboundMessage(
                key=f"{delivery.message.dedupe_key}:0",
                channel="chat2desk",
                client_id=client,
                text="Order {order_id} accepted",
            ),
        ),
        order=order,
    )
    order_id = await backend.store.commit_step(step)
    assert isinstance(order_id, int)
    assert await backend.store.commit_step(step) is None  # redone: already processed
    await backend.inbound.ack(delivery)
    assert await backend.store.load_state(delivery.message.client_key) == b"S1"
    assert await backend.count_orders(client) == 1
    assert await backend.count_inbound_logs(client) == 1

    channel = RecordingChannel()
    sender = backend.sender(channel, RetryPolicy())
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        await eventually(lambda: len(channel.sent) >= 1)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await task
    assert [m.text for m in channel.sent] == [f"Order {order_id} accepted"]


async def test_outbox_retries_in_client_order_dead_letters_and_replays(backend: Backend) -> None:
    deliveries = {}
    for client in ("A", "B", "C"):
        await backend.inbound.put(inbound(backend, client, f"{client}-m"))
    for d in await backend.fetch_n(3):
        deliveries[d.message.client_id.rsplit("-", 1)[1]] = d
    for d in deliveries.values():
        await commit(backend, d, replies=2)
    key = {c: [f"{d.message.dedupe_key}:{i}" for i in range(2)] for c, d in deliveries.items()}

    channel = RecordingChannel()
    channel.failures[key["A"][0]] = 10  # never gets through: dead-lettered after 2 attempts
    channel.failures[key["C"][0]] = 1  # gets through on its second attempt
    policy = RetryPolicy(quick_delays=(1.0,), slow_delay=1.0, max_attempts=2)
    sender = backend.sender(channel, policy)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    client = {c: d.message.client_id for c, d in deliveries.items()}
    try:
        await eventually(lambda: len(channel.keys(client["B"])) == 2, timeout=5)
        # B never waited for A's or C's failures
        assert channel.keys(client["A"]) == [] or channel.keys(client["A"]) == [key["A"][1]]
        await eventually(
            lambda: len(channel.keys(client["C"])) == 2 and len(channel.keys(client["A"])) == 1
        )
        assert channel.keys(client["C"]) == key["C"]  # the retried head first
        assert channel.keys(client["A"]) == [key["A"][1]]
        assert channel.attempts[key["A"][0]] == 2

        letters = await backend.dead_letters.list()
        assert [(d.kind, d.key, d.attempts) for d in letters] == [("outbox", key["A"][0], 2)]
        channel.failures.clear()
        assert await backend.dead_letters.replay(None) == 1
        await eventually(lambda: len(channel.keys(client["A"])) == 2)
        assert channel.keys(client["A"]) == [key["A"][1], key["A"][0]]
        assert await backend.dead_letters.list() == []
    finally:
        stop.set()
        await task
    assert await backend.dead_letters.purge() == 0


async def test_distributed_step_redone_after_a_crash_before_the_redis_mark(
    backend: Backend,
) -> None:
    """The worst crash point of the distributed commit: PostgreSQL written and replies published,
    Redis not yet updated. The redone step writes nothing twice and the reply goes out once."""
    if backend.name != "distributed":
        return  # one SQLite transaction has no such point
    from sqlalchemy import func, select

    from orderbot.orders.models import OrderItem
    from orderbot.storage.schema import order_items

    await backend.inbound.put(inbound(backend, "9", "confirm"))
    (delivery,) = await backend.fetch_n(1)
    client = delivery.message.client_id
    step = StepCommit(
        delivery=delivery,
        state=None,
        state_name="-",
        replies=(reply(delivery, 0, "Order {order_id} accepted"),),
        order=OrderRecord(
            idempotency_key=f"chat2desk:{client}:confirm",
            channel="chat2desk",
            client_id=client,
            source="whatsapp",
            phone=None,
            address=None,
            quantity=None,
            language="en",
            items=(OrderItem(item_id="pla", name="PLA print", quantity=2, unit_price="450.00"),),
            total="900.00",
            currency="KGS",
        ),
    )
    first = await backend.store.commit_step(step)
    runtime = backend.runtime  # type: ignore[attr-defined]
    await runtime.redis.delete(runtime.keys.processed(delivery.message.dedupe_key))
    assert await backend.store.commit_step(step) == first  # redone: same order
    await backend.inbound.ack(delivery)
    assert await backend.count_orders(client) == 1
    assert await backend.count_inbound_logs(client) == 1
    async with runtime.engine.connect() as conn:
        lines = (
            await conn.execute(
                select(func.count()).select_from(order_items).where(order_items.c.order_id == first)
            )
        ).scalar_one()
    assert lines == 1

    channel = RecordingChannel()
    sender = backend.sender(channel, RetryPolicy())
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        await eventually(lambda: len(channel.sent) >= 1)
        await asyncio.sleep(0.5)  # the republished copy must be dropped, not sent
    finally:
        stop.set()
        await task
    assert [m.text for m in channel.sent] == [f"Order {first} accepted"]


async def test_a_send_cut_off_by_a_crash_comes_back_in_doubt(backend: Backend) -> None:
    """A sender died between starting a send and recording it: after the restart the reply is
    handed out ``in_doubt_since`` the start, so the sender asks the channel before resending;
    a reply whose send never started comes back plain."""
    await backend.inbound.put(inbound(backend, "D", "d-m"))
    (delivery,) = await backend.fetch_n(1)
    await commit(backend, delivery, replies=2)
    first = f"{delivery.message.dedupe_key}:0"

    async def claim_one() -> list[OutboxItem]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = await backend.outbox.claim(1, set())
            if found:
                return list(found)
            await backend.outbox.wait(0.05)
        return []

    (item,) = await claim_one()
    assert item.message.key == first
    assert item.in_doubt_since is None
    before = time.time()
    await backend.outbox.begin_send(item.handle)
    await backend.restart()  # the crash: no mark_sent

    (again,) = await claim_one()
    assert again.message.key == first
    since = again.in_doubt_since
    assert since is not None and before - 1 <= since <= time.time()
    await backend.outbox.mark_sent(again.handle)
    (second,) = await claim_one()
    assert second.message.key == f"{delivery.message.dedupe_key}:1"
    assert second.in_doubt_since is None
    await backend.outbox.mark_sent(second.handle)


async def test_redeliveries_count_the_steps_that_started(backend: Backend) -> None:
    """A message that keeps crashing workers mid-step is counted each time; on RabbitMQ one
    that only waited in a dying worker's buffer is not (SQLite counts every fetch)."""
    await backend.inbound.put(inbound(backend, "8", "crashy"))
    for expected in (1, 2, 3, 4):
        (d,) = await backend.fetch_n(1)
        assert d.deliveries == expected
        await backend.inbound.begin(d)  # the step starts, then the worker dies
        await backend.restart()
    (d,) = await backend.fetch_n(1)
    assert d.deliveries == 5
    await backend.restart()  # died before this one's step started
    (d,) = await backend.fetch_n(1)
    assert d.deliveries == (5 if backend.name == "distributed" else 6)
    await commit(backend, d)


async def test_an_idle_dialog_is_recorded_as_abandoned_once(backend: Backend) -> None:
    await backend.inbound.put(inbound(backend, "A", "a1"))
    (delivery,) = await backend.fetch_n(1)
    now = time.time()
    state = DialogState(
        step="ADDRESS",
        language="ru",
        data={},
        started_at=now - 100,
        updated_at=now,
        message_count=2,
    )
    await backend.store.commit_step(
        StepCommit(delivery=delivery, state=state.to_json(), state_name="ADDRESS", replies=())
    )
    await backend.inbound.ack(delivery)
    client = delivery.message.client_id
    assert await backend.store.abandon_idle(now - 60, now) == 0  # not idle yet
    later = time.time() + 1
    assert await backend.store.abandon_idle(later, later) == 1
    assert await backend.store.abandon_idle(later, later) == 0  # recorded once
    assert await backend.store.load_state(delivery.message.client_key) is None
    assert await backend.outcomes(client) == [("abandoned", "ADDRESS", 2)]
