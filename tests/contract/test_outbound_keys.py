"""Every deterministic key of a side effect, pinned byte for byte (orderbot.outbound).

These keys are persisted (outbox rows, Redis marks, order rows, RabbitMQ message ids): a changed
format would make a deployment upgraded in place send again what it already sent. A failure here
is never fixed by updating the expected string."""

from __future__ import annotations

from orderbot import outbound
from orderbot.messages import InboundMessage


def test_key_formats_are_pinned() -> None:
    assert outbound.message_key("chat2desk", "m-1") == "chat2desk:m-1"
    assert outbound.client_key("telegram", "42") == "telegram:42"
    assert outbound.reply_key("chat2desk:m-1", 0) == "chat2desk:m-1:0"
    assert outbound.reply_key("chat2desk:m-1", 12) == "chat2desk:m-1:12"
    assert outbound.transfer_key("chat2desk:m-1") == "chat2desk:m-1:transfer"
    assert outbound.handoff_alert_key("chat2desk:m-1", "-100") == "chat2desk:m-1:handoff:-100"
    assert (
        outbound.handback_key("chat2desk:7", 1700000000.25) == "handback:chat2desk:7:1700000000.25"
    )
    assert outbound.handback_key("chat2desk:7", 1700000000) == "handback:chat2desk:7:1700000000.0"
    assert outbound.new_order_alert_key(5, "-100") == "new-order:5:telegram:-100"
    assert outbound.new_order_webhook_key(5) == "new-order:5:webhook"
    assert outbound.status_notification_key(5, 9) == "status:5:9"
    assert outbound.order_idempotency_key("chat2desk", "7", "m-1") == "chat2desk:7:m-1"
    assert outbound.pending_notification_member(5, 1700000000.5) == "5:1700000000.5"
    # the operators' Telegram chat (issue 17)
    assert outbound.new_order_topic_key(5) == "new-order:5:topic"
    assert outbound.topic_post_key("telegram:m-1", "topic") == "telegram:m-1:topic"
    assert outbound.topic_post_key("telegram:m-1", "back") == "telegram:m-1:back"
    assert outbound.operator_pass_key("telegram:77") == "telegram:77:customer"
    assert outbound.operator_notice_key("quota:chat2desk", "-100") == "quota:chat2desk:-100"
    assert (
        outbound.operator_reply_key("chat2desk:7", "n0nce-123") == "operator:chat2desk:7:n0nce-123"
    )
    assert outbound.daily_summary_key("2026-12-07", "-100") == "daily-summary:2026-12-07:-100"
    # operations alerts (issue 19)
    assert (
        outbound.ops_alert_key("circuit_open", "chat2desk", 1963000, "-100")
        == "alert:circuit_open:chat2desk:1963000:-100"
    )
    assert (
        outbound.ops_alert_resolved_key("quota", "chat2desk", 1963000, "-100")
        == "alert:quota:chat2desk:1963000:resolved:-100"
    )
    # the one reminder of an unfinished dialog (issue 16)
    assert (
        outbound.reminder_key("chat2desk:7", 1700000000.25) == "reminder:chat2desk:7:1700000000.25"
    )
    assert outbound.reminder_key("telegram:42", 1700000000) == "reminder:telegram:42:1700000000.0"


def test_messages_use_the_pinned_keys() -> None:
    message = InboundMessage(
        channel="chat2desk", client_id="7", message_id="m-1", text="hi", received_at=1.0
    )
    assert message.dedupe_key == "chat2desk:m-1"
    assert message.client_key == "chat2desk:7"
