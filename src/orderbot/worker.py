"""The worker: takes inbound messages, runs the dialog step for each client, commits the result.

One client's messages are handled one at a time in arrival order (a lane per client); different
clients run concurrently, at most ``concurrency`` steps at once; a step that downloads model
files gives its slot up while the files download (the file receiver bounds those on its own).
The worker never talks to a messenger: replies go to the outbox in the same commit as the new
state.

A step that cannot be stored because a backing service is down waits at the head of its lane
and is tried again, for as long as the outage lasts. A step that fails the same way every time
(the database refuses the message's data, or a bug past the dialog's own error handling) is
tried again too, with the same backoff, but each try counts as a delivery: after
``max_deliveries`` the message goes to the dead-letter queue and its client's next messages
are handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from typing import Any

from orderbot.desk.base import HandoffWindow
from orderbot.desk.front import UNKNOWN, FrontDesk, Unknown
from orderbot.dialog import phone_offer
from orderbot.dialog.engine import error_reply, file_room, step, wants_files
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import (
    AskOperator,
    CreateOrder,
    DialogEnded,
    DialogOptions,
    DialogState,
    ReceivedFile,
    Reply,
)
from orderbot.errors import DataRejected, StorageError
from orderbot.files.receiver import FileReceiver, display_name
from orderbot.loggers import worker as log
from orderbot.messages import Attachment, InboundMessage, OutboundMessage, replies_to
from orderbot.metrics import (
    DIALOG_STEP_SECONDS,
    INBOUND_DEAD_LETTERS,
    ORDERS_CREATED,
    STEP_FAILURES,
)
from orderbot.orders.models import OrderRecord, order_parts
from orderbot.outbound import order_idempotency_key
from orderbot.queues.base import InboundDelivery, InboundQueue
from orderbot.state.base import OutcomeRecord, StepCommit, StepStore

__all__ = ["Worker"]

_COMMIT_RETRIES = (0.1, 0.5, 2.0)
# Channels that show buttons; the others (Chat2Desk, the terminal) render them as numbered
# text, and the catalog listing is then a numbered list instead of cards.
_BUTTON_CHANNELS = frozenset({"telegram"})
# First and longest pause of a client's lane while storage is unavailable (seconds).
_OUTAGE_PAUSE = (0.5, 5.0)


class Worker:
    """Runs dialog steps for inbound messages until ``stop`` is set."""

    def __init__(
        self,
        inbound: InboundQueue,
        store: StepStore,
        flow: Flow,
        *,
        options: DialogOptions,
        concurrency: int = 5,
        max_deliveries: int = 5,
        shutdown_timeout: float = 10.0,
        poll_interval: float = 1.0,
        files: FileReceiver | None = None,
        front_desk: FrontDesk | None = None,
    ) -> None:
        self._inbound = inbound
        # Fetches, checks and stores model files before the (pure) dialog step sees them.
        self._files = files
        # Tracking and operator handoff, answered before the dialog engine runs.
        self._front_desk = front_desk
        self._store = store
        self._flow = flow
        self._options = options
        self._slots = asyncio.Semaphore(concurrency)
        self._max_deliveries = max_deliveries
        self._shutdown_timeout = shutdown_timeout
        self._poll_interval = poll_interval
        self._lanes: dict[str, deque[InboundDelivery]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffered = 0
        self._max_buffered = max(1000, concurrency * 50)
        self._room = asyncio.Event()
        # The last error of a delivery that failed in a way waiting does not cure, by handle:
        # the dead letter says why.
        self._failures: dict[int, Exception] = {}
        self.handled = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then finish in-flight work within the shutdown bound.
        What is not finished stays on the queue and is handled after the next start."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if self._buffered >= self._max_buffered:
                    self._room.clear()
                    await _first(self._room.wait(), stopping)
                    continue
                try:
                    deliveries = await self._inbound.fetch(min(500, self._max_buffered))
                except StorageError:
                    log.exception("cannot read the inbound queue; retrying")
                    await _first(asyncio.sleep(self._poll_interval), stopping)
                    continue
                if not deliveries:
                    await _first(self._inbound.wait(self._poll_interval), stopping)
                    continue
                for delivery in deliveries:
                    self._dispatch(delivery)
        finally:
            stopping.cancel()
            await self._drain()

    def _dispatch(self, delivery: InboundDelivery) -> None:
        key = delivery.message.client_key
        self._buffered += 1
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(delivery)
            return
        self._lanes[key] = deque((delivery,))
        task = asyncio.create_task(self._run_lane(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_lane(self, key: str) -> None:
        lane = self._lanes[key]
        pause = _OUTAGE_PAUSE[0]
        try:
            while lane:
                try:
                    await self.handle(lane[0])
                except DataRejected as exc:
                    self._failed(lane, exc)
                except StorageError as exc:
                    # A backing service is down (Redis, the database): the message stays at
                    # the head of its client's lane, unacked, and is tried again when it is back.
                    log.warning("client %s waits for storage (%s); retrying", key, exc)
                except Exception as exc:
                    log.exception("step of message %s failed", lane[0].message.message_id)
                    self._failed(lane, exc)
                else:
                    pause = _OUTAGE_PAUSE[0]
                    self._failures.pop(lane.popleft().handle, None)
                    self._buffered -= 1
                    self._room.set()
                    continue
                await asyncio.sleep(pause)
                pause = min(pause * 2, _OUTAGE_PAUSE[1])
        finally:
            for delivery in lane:
                self._failures.pop(delivery.handle, None)
            self._buffered -= len(lane)
            del self._lanes[key]

    def _failed(self, lane: deque[InboundDelivery], exc: Exception) -> None:
        """The step at the head of ``lane`` failed in a way waiting does not cure: count the
        try as a delivery, so that the message is dead-lettered after ``max_deliveries``
        (see :meth:`handle`) instead of holding up its client for ever."""
        delivery = lane[0]
        STEP_FAILURES.labels(delivery.message.channel).inc()
        self._failures[delivery.handle] = exc
        log.warning(
            "message %s failed (try %d of %d): %s",
            delivery.message.message_id,
            delivery.deliveries,
            self._max_deliveries,
            _shown(exc),
        )
        lane[0] = dataclasses.replace(delivery, deliveries=delivery.deliveries + 1)

    async def _drain(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d clients' messages left for the next start", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)

    async def handle(self, delivery: InboundDelivery) -> None:
        """Run one step and commit it; a step that raises answers with an apology;
        what raises here is a commit that failed (storage down, or data it refuses), which the
        lane retries (see :meth:`_run_lane`).

        The step holds one of the ``concurrency`` slots, except while it downloads files: the
        downloads (bounded by the file receiver: a deadline, a minimum rate, a few at a time)
        happen between two slot holds, so a slow link never keeps other customers waiting.
        The client's lane still runs this message to its end before the next one (order), and
        nothing is committed before the files are in (a crash redoes the step; stored files
        are named by checksum, so a second download stores nothing new)."""
        started = time.perf_counter()
        message = delivery.message
        async with self._slots:
            loaded = await self._load(delivery, started)
            if loaded is None:
                return
            state, raw = loaded
            if not self._downloads_files(state, message):
                await self._step(delivery, state, raw, message.attachments, None, started)
                return
        failure: Exception | None = None
        attachments: tuple[Attachment | ReceivedFile, ...] = message.attachments
        try:
            attachments = await self._receive_files(state, message)
        except Exception as exc:  # answered as a failed step below
            failure = exc
        async with self._slots:
            await self._step(delivery, state, raw, attachments, failure, started)

    async def _load(
        self, delivery: InboundDelivery, started: float
    ) -> tuple[DialogState | None, bytes | None] | None:
        """The client's state, or ``None`` when the message needs no step (a copy of one
        already processed, dead-lettered, or answered by the front desk)."""
        message = delivery.message
        if delivery.deliveries > self._max_deliveries:
            await self._give_up(delivery, started)
            return None
        handoff: HandoffWindow | Unknown | None = UNKNOWN
        if self._front_desk is None:
            raw, processed = await self._store.load(message)
        else:
            # Both at once: on the distributed profile they share one Redis pipeline.
            (raw, processed), handoff = await asyncio.gather(
                self._store.load(message), self._handoff(message.client_key)
            )
        if processed:
            # A copy of a message already handled (a messenger or broker redelivery).
            log.info("message %s was already processed; dropping the copy", message.message_id)
            await self._inbound.ack(delivery)
            self.handled += 1
            return None
        # An attempt starts (counted for a redelivery; a processed copy is not an attempt).
        await self._inbound.begin(delivery)
        state = _decode_state(raw, message)
        if self._front_desk is not None and await self._at_front_desk(
            delivery, state, raw, handoff
        ):
            return None
        return state, raw

    async def _step(
        self,
        delivery: InboundDelivery,
        state: DialogState | None,
        raw: bytes | None,
        attachments: tuple[Attachment | ReceivedFile, ...],
        failure: Exception | None,
        started: float,
    ) -> None:
        message = delivery.message
        before = state.step if state is not None else "-"
        known: dict[str, Any] = {}
        if self._front_desk is not None and (
            state is None or state.updated_at + self._options.idle_timeout < time.time()
        ):
            # A dialog begins: what this customer ordered last, to offer it again.
            known = await self._front_desk.known_customer(message.channel, message.client_id)
        try:
            if failure is not None:
                raise failure
            known_phone = message.route.get("phone")  # WhatsApp on Chat2Desk: client.phone
            result = step(
                self._flow,
                state,
                phone_offer.answer_text(self._flow, state, message.text, known_phone),
                time.time(),
                options=self._options,
                attachments=attachments,
                buttons=message.channel in _BUTTON_CHANNELS,
                language_hint=message.language or None,
                known=known,
            )
            result = phone_offer.with_offer(self._flow, result, known_phone)
            alerts: tuple[OutboundMessage, ...] = ()
            desk = self._front_desk
            for effect in result.effects:
                if isinstance(effect, AskOperator) and desk is not None:
                    alerts += desk.question_alerts(message, effect.step, time.time())
            commit = _commit_for(delivery, result.state, result.replies, result.effects, alerts)
        except Exception as exc:  # a step failure still answers the customer
            log.exception("dialog step failed for message %s", message.message_id)
            language = state.language if state is not None else self._options.default_language
            commit = StepCommit(
                delivery=delivery,
                state=raw,
                state_name=before,
                replies=_outbound(message, (error_reply(language),)),
                error=f"{type(exc).__name__}: {exc}",
            )
        order_id = await self._commit(commit)
        elapsed = time.perf_counter() - started
        DIALOG_STEP_SECONDS.observe(elapsed)
        if commit.order is not None and order_id is not None:
            ORDERS_CREATED.labels(message.channel).inc()
            if self._front_desk is not None:
                self._front_desk.note_order(message.client_key)
        self.handled += 1
        log.info(
            "handled %s client=%s msg=%s step=%s->%s replies=%d order=%s %.1fms",
            message.channel,
            message.client_id,
            message.message_id,
            before,
            commit.state_name,
            len(commit.replies),
            order_id if commit.order is not None else "-",
            elapsed * 1000,
        )

    async def _handoff(self, client_key: str) -> HandoffWindow | Unknown | None:
        """The front desk's handoff check; UNKNOWN when it failed (``intercept`` asks again
        and handles the failure)."""
        assert self._front_desk is not None
        try:
            return await self._front_desk.handoff(client_key)
        except Exception:
            return UNKNOWN

    async def _at_front_desk(
        self,
        delivery: InboundDelivery,
        state: DialogState | None,
        raw: bytes | None,
        handoff: HandoffWindow | Unknown | None,
    ) -> bool:
        """Let the front desk answer (tracking, handoff); True when it did and it is committed.
        If it fails, the message goes to the dialog as usual."""
        assert self._front_desk is not None
        try:
            commit = await self._front_desk.intercept(delivery, state, raw, handoff=handoff)
        except Exception:
            log.exception("front desk failed for message %s", delivery.message.message_id)
            return False
        if commit is None:
            return False
        await self._commit(commit)
        self.handled += 1
        return True

    def _downloads_files(self, state: DialogState | None, message: InboundMessage) -> bool:
        # Only a step that wants files gets them downloaded: a photo at the address step is not.
        return (
            self._files is not None
            and any(a.kind != "location" for a in message.attachments)
            and wants_files(self._flow, state)
        )

    async def _receive_files(
        self, state: DialogState | None, message: InboundMessage
    ) -> tuple[Attachment | ReceivedFile, ...]:
        """Download what the step takes; no more files than it has room for are fetched (the
        others are refused as ``too_many`` without a request)."""
        assert self._files is not None
        room = file_room(self._flow, state)
        received: list[Attachment | ReceivedFile] = []
        for attachment in message.attachments:
            if attachment.kind == "location":
                received.append(attachment)
            elif room <= 0:
                received.append(ReceivedFile(name=display_name(attachment), refused="too_many"))
            else:
                room -= 1  # an attempt counts, refused or not: one link, one request at most
                received.append(await self._files.receive(attachment, channel=message.channel))
        return tuple(received)

    async def _commit(self, commit: StepCommit, *, ack: bool = True) -> int | None:
        """Commit, then (with ``ack``) tell the queue the message is done: a broker may only
        forget a message once its effects are stored."""
        for delay in (*_COMMIT_RETRIES, None):
            try:
                order_id = await self._store.commit_step(commit)
            except DataRejected:
                raise  # the same on every try: the lane counts it (see _failed)
            except StorageError:
                if delay is None:
                    # Not done: the lane tries the message again (its step redone is a no-op
                    # for what was stored); the broker keeps it meanwhile.
                    log.warning("cannot commit message %s", commit.delivery.message.message_id)
                    raise
                await asyncio.sleep(delay)
                continue
            if ack:
                await self._inbound.ack(commit.delivery)
            return order_id
        return None  # pragma: no cover - the loop always returns

    async def _give_up(self, delivery: InboundDelivery, started: float) -> None:
        message = delivery.message
        error = f"delivered {delivery.deliveries} times without completing its step"
        last = self._failures.get(delivery.handle)
        if last is not None:
            log.error(
                "dead-lettering message %s: %s; last error: %s",
                message.message_id,
                error,
                _shown(last),
            )
            error += f"; last error: {type(last).__name__}: {last}"  # the dead letter's record
        else:
            log.error("dead-lettering message %s: %s", message.message_id, error)
        language = self._options.default_language
        raw = await self._store.load_state(message.client_key)
        state = _decode_state(raw, message)
        if state is not None:
            language = state.language
        try:
            await self._commit(
                StepCommit(
                    delivery=delivery,
                    state=raw,
                    state_name=state.step if state is not None else "-",
                    replies=_outbound(message, (error_reply(language),)),
                    error=error,
                ),
                ack=False,  # dead_letter takes it off the queue, after the copy is stored
            )
        except DataRejected as exc:
            # The message's own data is what the database refuses (its log row carries it):
            # the dead letter keeps the message; the apology may not have been published.
            log.warning("message %s is dead-lettered unlogged: %s", message.message_id, exc)
        await self._inbound.dead_letter(delivery, error)
        self._failures.pop(delivery.handle, None)
        INBOUND_DEAD_LETTERS.labels(message.channel).inc()
        self.handled += 1


def _shown(exc: Exception) -> str:
    """An error for a log line: ours name only error classes; another's message may quote
    values, personal data included (its traceback is logged where it is caught)."""
    return str(exc) if isinstance(exc, DataRejected) else type(exc).__name__


def _decode_state(raw: bytes | None, message: InboundMessage) -> DialogState | None:
    if raw is None:
        return None
    try:
        return DialogState.from_json(raw)
    except Exception:  # an unreadable state must not block the customer: start over
        log.exception("unreadable dialog state for %s; starting over", message.client_id)
        return None


def merge_replies(replies: tuple[Reply, ...]) -> tuple[Reply, ...]:
    """One message per run of replies up to and including one with buttons: a greeting and the
    first question arrive as one message, not two. Halves the API calls of many steps (and the
    messenger quota they use) and the two parts can never be separated by a failure."""
    merged: list[Reply] = []
    texts: list[str] = []
    for reply in replies:
        texts.append(reply.text)
        if reply.buttons:
            merged.append(Reply("\n\n".join(texts), reply.buttons))
            texts = []
    if texts:
        merged.append(Reply("\n\n".join(texts)))
    return tuple(merged)


def _outbound(message: InboundMessage, replies: tuple[Reply, ...]) -> tuple[OutboundMessage, ...]:
    return replies_to(message, merge_replies(replies), time.time())


def _commit_for(
    delivery: InboundDelivery,
    state: DialogState | None,
    replies: tuple[Reply, ...],
    effects: tuple[CreateOrder | DialogEnded | AskOperator, ...],
    alerts: tuple[OutboundMessage, ...] = (),
) -> StepCommit:
    message = delivery.message
    order: OrderRecord | None = None
    outcomes: list[OutcomeRecord] = []
    for effect in effects:
        if isinstance(effect, CreateOrder):
            order = OrderRecord(
                idempotency_key=order_idempotency_key(
                    message.channel, message.client_id, message.message_id
                ),
                channel=message.channel,
                client_id=message.client_id,
                source=message.route.get("transport", message.channel),
                phone=effect.phone,
                address=effect.address,
                quantity=effect.quantity,
                language=effect.language,
                data=effect.data,
                # How to reach the customer again (status notifications); a callback id is not.
                route={k: v for k, v in message.route.items() if k != "callback_query_id"},
                **order_parts(effect.data),
            )
        elif isinstance(effect, DialogEnded):
            outcomes.append(
                OutcomeRecord(
                    outcome=effect.outcome,
                    last_step=effect.last_step,
                    message_count=effect.message_count,
                    started_at=effect.started_at,
                    ended_at=effect.ended_at,
                )
            )
    if state is not None:
        # Where a reminder of this dialog goes (the route of the customer's last message).
        route = {k: v for k, v in message.route.items() if k != "callback_query_id"}
        if route != state.route:
            state = dataclasses.replace(state, route=route)
    return StepCommit(
        delivery=delivery,
        state=state.to_json() if state is not None else None,
        state_name=state.step if state is not None else "-",
        replies=_outbound(message, replies) + alerts,
        order=order,
        outcomes=tuple(outcomes),
    )


async def _first(aw: object, stopping: asyncio.Future[Any]) -> None:
    """Await ``aw`` but return early when ``stopping`` completes."""
    task = asyncio.ensure_future(aw)  # type: ignore[call-overload]
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
