"""The channel adapter interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from orderbot.errors import InvalidPayload
from orderbot.messages import InboundMessage, OutboundMessage

__all__ = ["Channel", "invalid_field", "json_type_name"]


def invalid_field(field: str, problem: str) -> InvalidPayload:
    """A 422 naming the field of a webhook payload that is missing or wrong."""
    return InvalidPayload(f"{field}: {problem}", details=[{"field": field, "problem": problem}])


def json_type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


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
