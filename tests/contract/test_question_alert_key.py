"""The key of the operators' copy of an unanswered question (issue 16) is persisted in the
outbox like the other keys: pinned byte for byte."""

from __future__ import annotations

from orderbot import outbound


def test_question_alert_key_is_pinned() -> None:
    assert outbound.question_alert_key("telegram:m-1", "-100") == "telegram:m-1:question:-100"
