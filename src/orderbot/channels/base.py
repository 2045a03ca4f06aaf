"""The channel adapter interface."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from orderbot.errors import InvalidPayload
from orderbot.messages import InboundMessage, OutboundMessage

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_INTEGER_ID",
    "Channel",
    "check_id",
    "check_integer_id",
    "check_url",
    "clean_text",
    "invalid_field",
    "json_type_name",
]

# Ids become keys and columns (client_id is VARCHAR(100), keys add the channel and an index),
# so they are short and plain: letters, digits and ``_ . : @ -``.
MAX_ID_LENGTH = 64
_ID_CHARS = re.compile(r"[A-Za-z0-9_.:@-]+")
# Integer ids travel as JSON numbers to the messenger and as BIGINT in SQL: signed 64 bits.
MAX_INTEGER_ID = 2**63 - 1
MAX_URL_LENGTH = 2048
# C0 controls (NUL...) but tab and newline, DEL, and C1 controls: no place in a chat message, and
# NUL cannot be stored in PostgreSQL text. A lone carriage return becomes a newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def invalid_field(field: str, problem: str) -> InvalidPayload:
    """A 422 naming the field of a webhook payload that is missing or wrong."""
    return InvalidPayload(f"{field}: {problem}", details=[{"field": field, "problem": problem}])


def check_id(field: str, value: str) -> str:
    """``value`` (already stripped) as an id, or a 422 naming ``field``: 1 to 64 of
    ``A-Z a-z 0-9 _ . : @ -``."""
    if not value:
        raise invalid_field(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise invalid_field(field, f"longer than {MAX_ID_LENGTH} characters")
    if _ID_CHARS.fullmatch(value) is None:
        raise invalid_field(field, "may hold only letters, digits and _ . : @ -")
    return value


def check_integer_id(field: str, value: int) -> int:
    """``value`` if it fits a signed 64-bit integer, else a 422 naming ``field``."""
    if not -MAX_INTEGER_ID <= value <= MAX_INTEGER_ID:
        raise invalid_field(field, "out of range (a signed 64-bit integer)")
    return value


def check_url(field: str, value: str) -> str:
    """A link or file reference: at most 2048 characters, no control characters or spaces
    (a 422 naming ``field`` otherwise)."""
    if len(value) > MAX_URL_LENGTH:
        raise invalid_field(field, f"longer than {MAX_URL_LENGTH} characters")
    if _CONTROL.search(value) is not None or any(c.isspace() for c in value):
        raise invalid_field(field, "must not hold spaces or control characters")
    return value


def clean_text(text: str) -> str:
    """Message text without control characters: tab and newline stay, CR LF and CR become a
    newline, the rest (NUL, ESC, DEL, C1) is dropped."""
    if text.isprintable():  # the common case costs one C-level scan
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


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
