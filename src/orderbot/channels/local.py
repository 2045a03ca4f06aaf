"""The terminal as a channel, for ``orderbot chat``: try the bot without a messenger account."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from orderbot.channels.base import Channel
from orderbot.messages import InboundMessage, OutboundMessage

__all__ = ["LocalChannel", "render_text"]


def render_text(message: OutboundMessage) -> str:
    """The reply as plain text, its buttons as numbered lines (no buttons in a terminal)."""
    if not message.buttons:
        return message.text
    lines = [f"{i}. {label}" for i, label in enumerate(message.buttons, 1)]
    return message.text + "\n" + "\n".join(lines)


class LocalChannel(Channel):
    """Replies go to ``output`` (print by default); ``replied`` is set after each one."""

    name = "local"

    def __init__(self, output: Callable[[str], None] = print) -> None:
        self._output = output
        self.replied = asyncio.Event()

    def parse_webhook(self, payload: Any, *, received_at: float) -> InboundMessage | None:
        raise NotImplementedError("the local channel has no webhook")

    async def send(self, message: OutboundMessage) -> None:
        self._output(render_text(message))
        self.replied.set()
