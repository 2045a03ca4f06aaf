"""What is answered before the dialog engine: order tracking and handing a customer to a person.

The worker asks :meth:`FrontDesk.intercept` first, for every message. It returns a complete
:class:`~orderbot.state.base.StepCommit` when the message is not for the dialog, or None:

* **Handed off** (a ``handoffs`` row for the client): the bot stays silent. The message is
  stored, logged and marked processed with no reply, until an operator hands back (CLI, admin
  API: the bot then says so and re-asks the dialog's question at once) or the handoff times
  out (``HANDOFF_TIMEOUT``; noticed by housekeeping, or by the next message, which then gets
  the comeback text and the question instead of being read as an answer: it was likely meant
  for the operator). Every way back sends the same message, :func:`comeback`, keyed by the
  handoff (``handback:<client>:<since>``): when housekeeping and the next message notice the
  same timeout at the same moment, the customer still gets it once.
* **A request for a person** (:func:`orderbot.desk.requests.classify`): the customer is told they
  are being connected. On Chat2Desk a ``transfer`` outbox entry hands the dialog to
  ``CHAT2DESK_OPERATOR_ID`` or ``CHAT2DESK_GROUP_ID`` (without either, Chat2Desk's operators
  still see the conversation in their inbox); elsewhere the Telegram admins
  (``ADMIN_CHAT_IDS``) get the conversation so far. With nobody to hand to, the customer is
  told so and the dialog goes on.
* **Tracking**: the customer's own orders (same channel and client id), or one by its number;
  someone else's number gets exactly the answer of a number that does not exist. The dialog's
  current question is asked again after the answer; its state is untouched.

Everything goes out through the outbox in the message's own commit, the handoff flag included.
What the desk reads comes from a :class:`~orderbot.desk.base.DeskStore`: SQLite (embedded) or
PostgreSQL with a Redis flag per handed-off client (distributed).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from orderbot.desk.base import (
    DeskStore,
    HandoffNotFound,
    HandoffWindow,
    OperatorTopics,
    OrderNotFound,
    Topic,
)
from orderbot.desk.requests import HandoffRequest, Track, classify
from orderbot.desk.texts import (
    comeback,
    flow_text,
    render_not_found,
    render_order,
    render_order_list,
    status_name,
)
from orderbot.dialog.engine import detect_language, question
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions, DialogState, Reply
from orderbot.loggers import worker as log
from orderbot.messages import (
    EVENT_DELIVERY_FAILED,
    EVENT_HANDBACK,
    EVENT_OPERATOR,
    EVENT_OPERATOR_REPLY,
    Attachment,
    InboundMessage,
    OutboundMessage,
    replies_to,
)
from orderbot.orders.alerts import question_alert, read_status_button, status_buttons, transcript
from orderbot.orders.status import InvalidTransition
from orderbot.outbound import (
    handoff_alert_key,
    operator_pass_key,
    question_alert_key,
    topic_post_key,
    transfer_key,
)
from orderbot.queues.base import InboundDelivery
from orderbot.state.base import HandoffChange, StepCommit

__all__ = ["DELIVERY_FAILED", "HANDED_OFF", "UNKNOWN", "FrontDesk", "Unknown"]


class Unknown:
    """Not asked yet (see :meth:`FrontDesk.intercept`)."""


UNKNOWN = Unknown()

HANDED_OFF = "HANDOFF"
"""The dialog state name written to the message log for messages received while handed off."""
DELIVERY_FAILED = "DELIVERY_FAILED"
"""The state name in the message log of a delivery failure the channel reported."""
TRANSCRIPT_MESSAGES = 20


class FrontDesk:
    """Tracking and operator handoff, on either profile's :class:`DeskStore`."""

    def __init__(
        self,
        store: DeskStore,
        flow: Flow,
        options: DialogOptions,
        *,
        admin_chats: Sequence[str] = (),
        chat2desk_operator_id: int | None = None,
        chat2desk_group_id: int | None = None,
        handoff_timeout: float = 2 * 3600,
        clock: Callable[[], float] = time.time,
        operator_chat: str = "",
        topics: OperatorTopics | None = None,
        handback: Callable[[str, str], Awaitable[None]] | None = None,
        set_status: Callable[[int, str, str], Awaitable[object]] | None = None,
    ) -> None:
        self._set_status = set_status
        self._operator_chat = operator_chat if topics is not None else ""
        self._topics = topics
        self._handback = handback
        self._store = store
        self._flow = flow
        self._options = options
        self._admin_chats = tuple(admin_chats)
        self._operator_id = chat2desk_operator_id
        self._group_id = chat2desk_group_id
        self._timeout = handoff_timeout
        self._clock = clock

    async def handoff(self, client_key: str) -> HandoffWindow | None:
        """The handoff ``client_key`` is in (None: with the bot). The worker asks this together
        with reading the dialog state and passes it to :meth:`intercept`."""
        return await self._store.handoff(client_key)

    async def intercept(
        self,
        delivery: InboundDelivery,
        state: DialogState | None,
        raw: bytes | None,
        *,
        handoff: HandoffWindow | Unknown | None = UNKNOWN,
    ) -> StepCommit | None:
        """The commit for ``delivery`` when the front desk answers it, else None (the dialog
        engine handles it). ``handoff``: :meth:`handoff`, when already asked."""
        message = delivery.message
        now = self._clock()
        key = message.client_key
        window = await self._store.handoff(key) if isinstance(handoff, Unknown) else handoff
        event = message.route.get("event")
        if event == EVENT_OPERATOR_REPLY:
            return await self._operator_reply(delivery, raw, now)
        if event is not None:
            return self._desk_event(delivery, state, raw, window, event, now)
        if window is not None:
            if window.until > now:
                mirrored = self._mirror(message, now)
                return self._commit(delivery, raw, HANDED_OFF, (), extra=mirrored)
            self._store.note_handoff(key, active=False)
            back = comeback(
                self._flow,
                self._options,
                state,
                channel=message.channel,
                client_id=message.client_id,
                since=window.since,
                route=message.route,
                now=now,
                language=self._language(state, message),
            )
            return self._commit(
                delivery, raw, _step_name(state), (), HandoffChange(start=False), extra=(back,)
            )
        request = classify(message.text)
        if request is None:
            return None
        language = self._language(state, message)
        if isinstance(request, Track):
            answer = await self._track(message, request, language)
            return self._commit(
                delivery, raw, _step_name(state), self._with_question(answer, state, now)
            )
        return await self._hand_off(delivery, state, raw, request, language, now)

    async def known_customer(self, channel: str, client_id: str) -> dict[str, Any]:
        """The data of the client's last order that was not cancelled ({} for none), for the
        dialog to offer again; a failing store only costs the offer."""
        try:
            return await self._store.last_order_data(channel, client_id) or {}
        except Exception:
            log.warning("cannot read the last order of a %s client; no repeat offer", channel)
            return {}

    def note_order(self, client_key: str) -> None:
        """The worker stored an order of ``client_key`` (see :meth:`known_customer`)."""
        self._store.note_order(client_key)

    def question_alerts(
        self, message: InboundMessage, step: str, now: float
    ) -> tuple[OutboundMessage, ...]:
        """The operators' copy of a question the flow could not answer (the dialog goes on):
        the Telegram admins get it; on Chat2Desk the operators see it in their inbox anyway."""
        if message.channel == "chat2desk" or not self._admin_chats:
            return ()
        text = question_alert(message, step)
        return tuple(
            OutboundMessage(
                key=question_alert_key(message.dedupe_key, chat),
                channel="telegram",
                client_id=chat,
                text=text,
                created_at=now,
            )
            for chat in self._admin_chats
        )

    async def _operator_reply(
        self, delivery: InboundDelivery, raw: bytes | None, now: float
    ) -> StepCommit:
        """An operator wrote in a customer's topic of the operators' chat: the text goes to
        the customer through their channel; ``/back`` hands them back to the bot (which says
        so and asks the question it was at). Anything else there is acknowledged silently."""
        message = delivery.message
        thread = message.route.get("thread_id")
        topic = None
        if thread is not None and thread.isdigit() and self._topics is not None:
            topic = await self._topics.of_thread(int(thread))
        if topic is None:
            return self._commit(delivery, raw, "-", ())
        pressed = read_status_button(self._flow, message.text)
        if pressed is not None:
            note = await self._status_pressed(topic, message, pressed, now)
            return self._commit(delivery, raw, "-", (), extra=(note,))
        command = message.text.strip().split("@", 1)[0].lower()
        if command in ("/back", "/handback"):
            if self._handback is not None:
                try:
                    await self._handback(topic.channel, topic.client_id)
                    said = f"↩ {topic.client_key} is back with the bot, at the step it left."
                except HandoffNotFound:
                    said = f"{topic.client_key} is not with an operator."
            else:
                said = "Handing back is not available here."
            note = self._topic_message(topic.client_key, topic.route, said, message, now, "back")
            return self._commit(delivery, raw, "-", (), extra=(note,))
        copy_of = message.route.get("copy_of")
        if copy_of is not None and topic.channel == "telegram":
            # Telegram to Telegram: the photo or document itself, caption included
            passed = OutboundMessage(
                key=operator_pass_key(message.dedupe_key),
                channel="telegram",
                client_id=topic.client_id,
                text=message.text,
                route={"from_chat_id": message.client_id, "message_id": copy_of},
                created_at=now,
                kind="copy",
            )
        elif message.text.strip():
            passed = OutboundMessage(
                key=operator_pass_key(message.dedupe_key),
                channel=topic.channel,
                client_id=topic.client_id,
                text=message.text,
                route=topic.route,
                created_at=now,
            )
        else:  # a file without words for a customer on another channel: tell the operator
            said = "Only text reaches this customer (their channel takes no files from here)."
            note = self._topic_message(topic.client_key, topic.route, said, message, now, "note")
            return self._commit(delivery, raw, "-", (), extra=(note,))
        return self._commit(delivery, raw, "-", (), extra=(passed,))

    async def _status_pressed(
        self, topic: Topic, message: InboundMessage, pressed: tuple[int, str], now: float
    ) -> OutboundMessage:
        """A status button of an order card: the order moves on as that operator did it (the
        customer is told as for any status change); the topic gets the outcome and the
        buttons for the next step."""
        order_id, status = pressed
        operator = message.route.get("operator", "operator")
        language = self._options.default_language
        buttons: tuple[str, ...] = ()
        if self._set_status is None:
            said = "Status changes are not available here."
        else:
            try:
                await self._set_status(order_id, status, f"telegram:{operator}")
            except (OrderNotFound, InvalidTransition, ValueError) as exc:
                said = f"#{order_id}: {exc}"
            else:
                said = f"#{order_id} → {status_name(self._flow, status, language)} ({operator})"
                buttons = status_buttons(self._flow, order_id, status, language)
        note = self._topic_message(topic.client_key, topic.route, said, message, now, "status")
        route = dict(note.route)
        if "callback_query_id" in message.route:  # the sender answers the button press
            route["callback_query_id"] = message.route["callback_query_id"]
        return replace(note, buttons=buttons, route=route)

    def _mirror(self, message: InboundMessage, now: float) -> tuple[OutboundMessage, ...]:
        """A customer's message during a handoff, for their topic: a Telegram customer's photo
        or document is copied there as it is (``copyMessage``, caption included); anything
        else is posted as text, with a link to each attachment (Chat2Desk's file URLs)."""
        posted = self._to_topic(message, _mirror_text(message), now, "topic")
        copy_of = message.route.get("copy_of")
        if not posted or message.channel != "telegram" or copy_of is None:
            return posted
        (post,) = posted
        route = {**post.route, "from_chat_id": message.client_id, "message_id": copy_of}
        return (replace(post, text=message.text, route=route, kind="copy"),)

    def _to_topic(
        self, message: InboundMessage, text: str, now: float, suffix: str
    ) -> tuple[OutboundMessage, ...]:
        """``text`` for the customer's topic in the operators' chat, if there is one."""
        if not self._operator_chat or message.route.get("event"):
            return ()
        return (self._topic_message(message.client_key, message.route, text, message, now, suffix),)

    def _topic_message(
        self,
        client_key: str,
        route: dict[str, str],
        text: str,
        message: InboundMessage,
        now: float,
        suffix: str,
    ) -> OutboundMessage:
        kept = {f"to.{k}": v for k, v in route.items() if k in ("transport", "channel_id")}
        return OutboundMessage(
            key=topic_post_key(message.dedupe_key, suffix),
            channel="telegram",
            client_id=self._operator_chat,
            text=text,
            route={"for": client_key, "title": client_key, **kept},
            created_at=now,
            kind="topic",
        )

    def _desk_event(
        self,
        delivery: InboundDelivery,
        state: DialogState | None,
        raw: bytes | None,
        window: HandoffWindow | None,
        event: str,
        now: float,
    ) -> StepCommit:
        """A person took the conversation over in the channel's desk (:data:`EVENT_OPERATOR`):
        the bot falls silent, or stays silent longer. The desk closed it
        (:data:`EVENT_HANDBACK`): the bot comes back at the step it left. Never answered."""
        message = delivery.message
        route = {k: v for k, v in message.route.items() if k in ("transport", "channel_id")}
        delivery = replace(delivery, message=replace(message, route=route))
        key = message.client_key
        if event == EVENT_DELIVERY_FAILED:
            return self._commit(delivery, raw, DELIVERY_FAILED, ())
        if event == EVENT_OPERATOR:
            self._store.note_handoff(key, active=True)
            change = HandoffChange(
                start=True, reason="an operator took over", until=now + self._timeout
            )
            return self._commit(delivery, raw, HANDED_OFF, (), change)
        if event != EVENT_HANDBACK or window is None:
            return self._commit(delivery, raw, _step_name(state), ())
        self._store.note_handoff(key, active=False)
        back = comeback(
            self._flow,
            self._options,
            state,
            channel=message.channel,
            client_id=message.client_id,
            since=window.since,
            route=route,
            now=now,
            language=self._language(state, message),
        )
        return self._commit(
            delivery, raw, _step_name(state), (), HandoffChange(start=False), extra=(back,)
        )

    def _language(self, state: DialogState | None, message: InboundMessage) -> str:
        if state is not None:
            return self._flow.language(state.language)
        wanted = self._options.default_language
        if self._options.detect_language:
            wanted = detect_language(message.text, wanted)
        return self._flow.language(wanted)

    def _with_question(self, text: str, state: DialogState | None, now: float) -> list[Reply]:
        replies = [Reply(text)]
        asked = question(self._flow, state, now, options=self._options)
        if asked is not None:
            replies.append(asked)
        return replies

    async def _track(self, message: InboundMessage, request: Track, language: str) -> str:
        if request.number is None:
            found = await self._store.customer_orders(message.channel, message.client_id)
            return render_order_list(self._flow, found, language, self._options.shop_timezone)
        one = await self._store.customer_order(message.channel, message.client_id, request.number)
        if one is None:  # not this customer's, or no such order: the same answer
            return render_not_found(self._flow, request.number, language)
        return render_order(self._flow, one[0], one[1], language, self._options.shop_timezone)

    async def _hand_off(
        self,
        delivery: InboundDelivery,
        state: DialogState | None,
        raw: bytes | None,
        request: HandoffRequest,
        language: str,
        now: float,
    ) -> StepCommit:
        message = delivery.message
        extra: list[OutboundMessage] = []
        if message.channel == "chat2desk":
            target = _transfer_target(self._operator_id, self._group_id)
            if target:
                extra.append(
                    OutboundMessage(
                        key=transfer_key(message.dedupe_key),
                        channel=message.channel,
                        client_id=message.client_id,
                        text="",
                        # the message that asked: Chat2Desk transfers a dialog by a message id
                        route={**message.route, **target, "message_id": message.message_id},
                        created_at=now,
                        kind="transfer",
                    )
                )
        if self._operator_chat:
            rows = await self._store.recent_messages(
                message.channel, message.client_id, TRANSCRIPT_MESSAGES - 1
            )
            card = await self._store.customer_orders(message.channel, message.client_id)
            text = transcript(
                message,
                [*rows, ("in", message.text)],
                hand_back="/back in this topic (or wait for HANDOFF_TIMEOUT)",
            )
            if card:
                text += "\n\n" + render_order_list(
                    self._flow, card, language, self._options.shop_timezone
                )
            extra += self._to_topic(message, text, now, "topic")
        elif message.channel != "chat2desk" and self._admin_chats:
            rows = await self._store.recent_messages(
                message.channel, message.client_id, TRANSCRIPT_MESSAGES - 1
            )
            text = transcript(
                message,
                [*rows, ("in", message.text)],
                hand_back=f"orderbot handback {message.client_id} --channel {message.channel}"
                f" (or POST /api/handoffs/{message.channel}/{message.client_id}/handback)",
            )
            extra += [
                OutboundMessage(
                    key=handoff_alert_key(message.dedupe_key, chat),
                    channel="telegram",
                    client_id=chat,
                    text=text,
                    created_at=now,
                )
                for chat in self._admin_chats
            ]
        elif message.channel != "chat2desk":
            # nobody would see the conversation: say so and go on with the dialog (Chat2Desk's
            # own operators see every dialog)
            replies = self._with_question(
                flow_text(self._flow, "handoff_unavailable", language), state, now
            )
            return self._commit(delivery, raw, _step_name(state), replies)
        self._store.note_handoff(message.client_key, active=True)
        if state is not None and not state.handed_off:
            # A dialog an operator took gets no reminder of it later (dialog.reminder).
            raw = replace(state, handed_off=True).to_json()
        return self._commit(
            delivery,
            raw,
            HANDED_OFF,
            [Reply(flow_text(self._flow, "handoff_started", language))],
            HandoffChange(start=True, reason=message.text[:200], until=now + self._timeout),
            extra,
        )

    def _commit(
        self,
        delivery: InboundDelivery,
        raw: bytes | None,
        state_name: str,
        replies: Sequence[Reply],
        handoff: HandoffChange | None = None,
        extra: Sequence[OutboundMessage] = (),
    ) -> StepCommit:
        message = delivery.message
        now = self._clock()
        outbound = replies_to(message, replies, now)
        # The dialog is where it stood (a handoff only marks the state ``handed_off``).
        return StepCommit(
            delivery=delivery,
            state=raw,
            state_name=state_name,
            replies=outbound + tuple(extra),
            handoff=handoff,
        )


def _mirror_text(message: InboundMessage) -> str:
    """A customer's message as posted to their topic: who wrote, what, and what it carried."""
    parts = [f"👤 {message.text.strip()}" if message.text.strip() else "👤"]
    parts += [_attachment_line(a) for a in message.attachments]
    return "\n".join(parts)


def _attachment_line(attachment: Attachment) -> str:
    """The attachment's kind, name and link (a Telegram ``tg://file/...`` id opens nothing for
    an operator: Telegram customers' files are copied into the topic instead)."""
    shown = [attachment.name] if attachment.name else []
    if not attachment.url.startswith("tg://"):
        shown.append(attachment.url)
    return f"📎 {attachment.kind}: {' '.join(shown)}".rstrip()


def _step_name(state: DialogState | None) -> str:
    return state.step if state is not None else "-"


def _transfer_target(operator_id: int | None, group_id: int | None) -> dict[str, str]:
    if operator_id is not None:
        return {"operator_id": str(operator_id)}
    if group_id is not None:
        return {"group_id": str(group_id)}
    return {}
