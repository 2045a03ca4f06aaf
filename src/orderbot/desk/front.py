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
from collections.abc import Callable, Sequence
from typing import Any

from orderbot.desk.base import DeskStore, HandoffWindow
from orderbot.desk.requests import HandoffRequest, Track, classify
from orderbot.desk.texts import (
    comeback,
    flow_text,
    render_not_found,
    render_order,
    render_order_list,
)
from orderbot.dialog.engine import detect_language, question
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions, DialogState, Reply
from orderbot.loggers import worker as log
from orderbot.messages import InboundMessage, OutboundMessage, replies_to
from orderbot.orders.alerts import question_alert, transcript
from orderbot.outbound import handoff_alert_key, question_alert_key, transfer_key
from orderbot.queues.base import InboundDelivery
from orderbot.state.base import HandoffChange, StepCommit

__all__ = ["HANDED_OFF", "UNKNOWN", "FrontDesk", "Unknown"]


class Unknown:
    """Not asked yet (see :meth:`FrontDesk.intercept`)."""


UNKNOWN = Unknown()

HANDED_OFF = "HANDOFF"
"""The dialog state name written to the message log for messages received while handed off."""
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
    ) -> None:
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
        if window is not None:
            if window.until > now:
                return self._commit(delivery, raw, HANDED_OFF, ())
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
            return render_order_list(self._flow, found, language)
        one = await self._store.customer_order(message.channel, message.client_id, request.number)
        if one is None:  # not this customer's, or no such order: the same answer
            return render_not_found(self._flow, request.number, language)
        return render_order(self._flow, one[0], one[1], language)

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
                        route={**message.route, **target},
                        created_at=now,
                        kind="transfer",
                    )
                )
        elif self._admin_chats:
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
        else:  # nobody would see the conversation: say so and go on with the dialog
            replies = self._with_question(
                flow_text(self._flow, "handoff_unavailable", language), state, now
            )
            return self._commit(delivery, raw, _step_name(state), replies)
        self._store.note_handoff(message.client_key, active=True)
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
        # The state is written back as it was: the dialog is where it stood.
        return StepCommit(
            delivery=delivery,
            state=raw,
            state_name=state_name,
            replies=outbound + tuple(extra),
            handoff=handoff,
        )


def _step_name(state: DialogState | None) -> str:
    return state.step if state is not None else "-"


def _transfer_target(operator_id: int | None, group_id: int | None) -> dict[str, str]:
    if operator_id is not None:
        return {"operator_id": str(operator_id)}
    if group_id is not None:
        return {"group_id": str(group_id)}
    return {}
