"""The housekeeping job that sends the one reminder of an unfinished order, on both profiles.

Every round it lists the dialogs idle for at least ``REMINDER_AFTER`` seconds but not yet past
``DIALOG_IDLE_TIMEOUT`` (those start over and are recorded as abandoned) and not with an
operator (:meth:`~orderbot.state.base.StepStore.idle_dialogs`), asks the dialog engine for the
reminder (:func:`orderbot.dialog.reminder.remind`: none after a cancel or an order, none twice)
and commits it through the store: the outbox entry under
:func:`~orderbot.outbound.reminder_key` (the client and the dialog's last-step time) with the
state that marks it sent. Run twice, it queues nothing twice. Chat2Desk conversations get one
only within 24 hours of the customer's last message (WhatsApp's window); Telegram has no window.
"""

from __future__ import annotations

from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions, DialogState
from orderbot.dialog.reminder import remind
from orderbot.loggers import storage as log
from orderbot.messages import OutboundMessage
from orderbot.orders.status import WHATSAPP_WINDOW
from orderbot.outbound import reminder_key
from orderbot.state.base import StepStore

__all__ = ["CHANNEL_WINDOWS", "send_reminders"]

CHANNEL_WINDOWS: dict[str, float] = {"chat2desk": WHATSAPP_WINDOW}
"""Seconds after the customer's last message within which a channel may remind them."""


async def send_reminders(
    store: StepStore,
    flow: Flow,
    options: DialogOptions,
    now: float,
    *,
    after: float,
) -> int:
    """Queue the reminders due at ``now`` for dialogs idle ``after`` seconds (REMINDER_AFTER;
    0: none) but not past ``options.idle_timeout``; returns how many were queued."""
    if after <= 0 or after >= options.idle_timeout:
        return 0
    sent = 0
    idle = await store.idle_dialogs(now - options.idle_timeout, now - after)
    for dialog in idle:
        channel, _, client_id = dialog.client_key.partition(":")
        window = CHANNEL_WINDOWS.get(channel)
        if window is not None and now - dialog.last_step >= window:
            continue
        try:
            state = DialogState.from_json(dialog.state)
        except ValueError:
            continue
        due = remind(flow, state, now, options=options, after=after)
        if due is None:
            continue
        new_state, reply = due
        message = OutboundMessage(
            key=reminder_key(dialog.client_key, dialog.last_step),
            channel=channel,
            client_id=client_id,
            text=reply.text,
            buttons=reply.buttons,
            route=dict(state.route),
            created_at=now,
        )
        if await store.commit_reminder(dialog, new_state.to_json(), message):
            sent += 1
    if sent:
        log.info("%d reminder(s) of unfinished orders queued", sent)
    return sent
