"""The channel adapter interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from orderbot.messages import InboundMessage, OutboundMessage

__all__ = ["Channel"]


class Channel(ABC):
    """Two halves: ``parse_webhook`` (inbound, pure) and ``send`` (outbound, I/O).

    ``send`` raises only :class:`orderbot.errors.ChannelError` subclasses; transport errors are
    translated at this boundary.
    """

    name: str

    @abstractmethod
    def parse_webhook(self, payload: Any, *, received_at: float) -> InboundMessage | None:
        """Turn a decoded webhook body into a message; None when the event is acknowledged but
        not for the bot (echo of our own reply, another hook type). Raises InvalidPayload."""

    @abstractmethod
    async def send(self, message: OutboundMessage) -> None:
        """Deliver one reply or raise a ChannelError."""

    def authenticate(self, headers: Mapping[str, str]) -> bool:
        """Whether a webhook request with these headers (lower-case names) comes from the
        messenger; False answers 401. Default: no per-channel check."""
        return True

    async def was_delivered(self, message: OutboundMessage, since: float) -> bool | None:
        """Whether ``message`` reached the customer by a send started at ``since`` (unix time)
        whose outcome was never recorded. True: do not send again; False: send; None: the
        channel cannot tell (the default), so the reply is sent again: at least once."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters own nothing
        """Release what the adapter holds (HTTP clients it created)."""
