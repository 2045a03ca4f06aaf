"""Every deterministic key of a side effect, in one place.

A step redone after a crash (a redelivered webhook, a worker killed before its ack) must create no
second order and send no second reply: every effect carries a key computed from what caused it,
and the stores drop a second write under the same key. These formats are persisted (outbox rows,
Redis marks, order rows, RabbitMQ message ids), so they never change: a deployment upgraded in
place would otherwise send again what it already sent. ``tests/contract/test_outbound_keys.py``
pins each format byte for byte.

Pure functions of strings and numbers; no imports.
"""

from __future__ import annotations

__all__ = [
    "client_key",
    "daily_summary_key",
    "handback_key",
    "handoff_alert_key",
    "message_key",
    "new_order_alert_key",
    "new_order_topic_key",
    "new_order_webhook_key",
    "operator_notice_key",
    "operator_pass_key",
    "operator_reply_key",
    "ops_alert_key",
    "ops_alert_resolved_key",
    "order_idempotency_key",
    "pending_notification_member",
    "question_alert_key",
    "reminder_key",
    "reply_key",
    "status_notification_key",
    "topic_post_key",
    "transfer_key",
]


def message_key(channel: str, message_id: str) -> str:
    """An inbound message's dedupe key: processed once per channel and message id."""
    return f"{channel}:{message_id}"


def client_key(channel: str, client_id: str) -> str:
    """A conversation: the dialog state, the handoff, the per-client lane and shard."""
    return f"{channel}:{client_id}"


def reply_key(message_key: str, index: int) -> str:
    """The ``index``-th reply to an inbound message (dialog replies and the front desk's)."""
    return f"{message_key}:{index}"


def transfer_key(message_key: str) -> str:
    """The Chat2Desk transfer of a conversation to an operator, asked for by one message."""
    return f"{message_key}:transfer"


def handoff_alert_key(message_key: str, chat: str) -> str:
    """The operators' Telegram alert of a handoff asked for by one message, per operator chat."""
    return f"{message_key}:handoff:{chat}"


def question_alert_key(message_key: str, chat: str) -> str:
    """The operators' Telegram copy of a question the flow could not answer, per operator chat
    (the dialog goes on; issue 16)."""
    return f"{message_key}:question:{chat}"


def reminder_key(client_key: str, last_activity: float) -> str:
    """The one reminder of a dialog left unfinished since ``last_activity`` (the stored time
    of its last step; the state then marks it sent)."""
    return f"reminder:{client_key}:{float(last_activity)!r}"


def handback_key(client_key: str, since: float) -> str:
    """The bot's comeback message after the handoff that began at ``since``."""
    return f"handback:{client_key}:{float(since)!r}"


def new_order_alert_key(order_id: int, chat: str) -> str:
    """The operators' Telegram alert of a new order, per operator chat."""
    return f"new-order:{order_id}:telegram:{chat}"


def new_order_webhook_key(order_id: int) -> str:
    """The shop's order webhook call for a new order."""
    return f"new-order:{order_id}:webhook"


def new_order_topic_key(order_id: int) -> str:
    """A new order's card in the customer's topic of the operators' Telegram chat."""
    return f"new-order:{order_id}:topic"


def topic_post_key(message_key: str, what: str) -> str:
    """What one inbound message puts in a customer's topic of the operators' chat: ``topic``
    (the handoff's transcript, or the customer's message during it), ``back``, ``status`` or
    ``note`` (answers to an operator's ``/back``, status button, or file)."""
    return f"{message_key}:{what}"


def operator_pass_key(message_key: str) -> str:
    """An operator's message from the operators' chat, passed on to the customer."""
    return f"{message_key}:customer"


def operator_notice_key(topic: str, chat: str) -> str:
    """A one-off notice to an admin chat (a message outside WhatsApp's window; the quota
    notice of issue 17 before it became the ``quota`` alert): ``topic`` names what it is
    about; queued once through the outbox (``OperationsAlerts.notice``)."""
    return f"{topic}:{chat}"


def status_notification_key(order_id: int, history_id: int) -> str:
    """The customer's notification of one status change (one ``order_status_history`` row)."""
    return f"status:{order_id}:{history_id}"


def order_idempotency_key(channel: str, client_id: str, message_id: str) -> str:
    """An order: the conversation and the message that confirmed it."""
    return f"{channel}:{client_id}:{message_id}"


def pending_notification_member(order_id: int, now: float) -> str:
    """A status change whose notification may not be published yet (a Redis sorted-set member)."""
    return f"{order_id}:{now!r}"


def operator_reply_key(client_key: str, nonce: str) -> str:
    """An operator's reply from the console: the reply form's nonce names it (a double submit
    queues it once)."""
    return f"operator:{client_key}:{nonce}"


def daily_summary_key(day: str, chat: str) -> str:
    """The daily summary of the shop's date ``day`` (ISO) to one admin chat."""
    return f"daily-summary:{day}:{chat}"


def ops_alert_key(kind: str, subject: str, bucket: int, chat: str) -> str:
    """An operations alert (issue 19: ``dead_letter``, ``circuit_open``, ``webhook``,
    ``quota``) about ``subject`` in the ``bucket``-th ``ALERT_INTERVAL``, per admin chat: one
    per kind and subject per interval, however many processes see it."""
    return f"alert:{kind}:{subject}:{bucket}:{chat}"


def ops_alert_resolved_key(kind: str, subject: str, bucket: int, chat: str) -> str:
    """The "resolved" message of the alert told in ``bucket`` (:func:`ops_alert_key`)."""
    return f"alert:{kind}:{subject}:{bucket}:resolved:{chat}"
