"""What a customer message asks for *before* the dialog engine: pure code, no I/O.

:func:`classify` reads a tracking request (``/track``, "статус заказа", "where is my order 12",
...), a request for a person (``/operator``, "оператор", "manager", ...), or ``None`` for the
dialog. Only whole messages count, like the engine's cancel words: an address containing
"оператор" stays an address.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TRACK_LIMIT", "HandoffRequest", "Track", "classify"]

TRACK_LIMIT = 10
"""How many of a customer's orders a tracking answer lists, newest first."""


@dataclass(frozen=True, slots=True)
class Track:
    """The customer asks about their orders: all recent ones, or the one numbered ``number``."""

    number: int | None = None


@dataclass(frozen=True, slots=True)
class HandoffRequest:
    """The customer asks for a person."""


_TRACK_PHRASES = frozenset(
    {
        "статус заказа",
        "статус моего заказа",
        "где мой заказ",
        "мои заказы",
        "track my order",
        "track order",
        "order status",
        "where is my order",
        "my orders",
    }
)
_OPERATOR_PHRASES = frozenset(
    {"оператор", "operator", "менеджер", "manager", "живой человек", "human", "a human"}
)
_MAX_NUMBER_DIGITS = 12


def _phrase(text: str) -> str:
    # As the engine reads cancel words: lower case, ё = е, punctuation ("№", "#", "?") ignored.
    return " ".join(re.findall(r"[^\W_]+", text.replace("ё", "е").replace("Ё", "Е").lower()))


def _number(words: Sequence[str]) -> int | bool | None:
    """No words: None; one number: it; anything else: False (not a tracking request)."""
    if not words:
        return None
    word = words[0]
    if len(words) == 1 and word.isascii() and word.isdigit() and len(word) <= _MAX_NUMBER_DIGITS:
        return int(word)
    return False


def classify(text: str) -> Track | HandoffRequest | None:
    """What a whole message asks for before the dialog sees it; None: it is for the dialog."""
    stripped = text.strip()
    if stripped.startswith("/"):
        head, _, rest = stripped.partition(" ")
        command = head.split("@", 1)[0].lower()
        if command == "/operator":
            return HandoffRequest()
        if command == "/track":
            number = _number(_phrase(rest).split())
            return Track(number) if number is not False else Track(None)
        return None
    phrase = _phrase(stripped)
    if not phrase:
        return None
    if phrase in _OPERATOR_PHRASES:
        return HandoffRequest()
    words = phrase.split()
    for cut in range(len(words), 0, -1):
        if " ".join(words[:cut]) in _TRACK_PHRASES:
            number = _number(words[cut:])
            if number is False:
                return None
            return Track(number if isinstance(number, int) else None)
    return None
