"""How a reply is laid out in Telegram: buttons as an inline keyboard with callback data that fits
Telegram's 64 bytes (and, when a button is pressed, the label read back from that data), and
texts cut to Telegram's length limit, which counts UTF-16 units rather than characters.

The encoding and the decoding of callback data sit together because they must agree on its
format (``<index>:<label>``, or ``<index>#<hash>`` for a label too long to fit), whichever
update, old or new, the pressed button arrives in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MAX_CALLBACK_DATA",
    "MAX_TEXT",
    "button_text",
    "callback_data",
    "inline_keyboard",
    "split_text",
]

MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
_CALLBACK = re.compile(r"(\d{1,2})([:#])(.*)", re.DOTALL)
_SHORT_LABEL = 20


def callback_data(index: int, label: str) -> str:
    """The callback data of button ``index``: ``"<index>:<label>"`` when that fits in Telegram's
    64 bytes, else ``"<index>#<hash of the label>"`` (the parser then reads the label from the
    keyboard of the message the button belongs to, or falls back to the button's number)."""
    data = f"{index}:{label}"
    if len(data.encode()) <= MAX_CALLBACK_DATA:
        return data
    digest = hashlib.sha256(label.encode()).hexdigest()[:16]
    return f"{index}#{digest}"


def inline_keyboard(buttons: Sequence[str]) -> list[list[dict[str, str]]]:
    """Buttons as inline keyboard rows: short labels side by side (3 a row when that fills
    every row, else 2), long ones one a row."""
    keys = [
        {"text": label, "callback_data": callback_data(i, label)} for i, label in enumerate(buttons)
    ]
    if any(len(label) > _SHORT_LABEL for label in buttons):
        per_row = 1
    else:
        per_row = 3 if len(keys) % 3 == 0 else 2
    return [keys[i : i + per_row] for i in range(0, len(keys), per_row)]


def button_text(data: str, message: Mapping[str, Any] | None) -> str:
    """What a pressed button means to the dialog: its label."""
    markup = message.get("reply_markup") if message is not None else None
    rows = markup.get("inline_keyboard") if type(markup) is dict else None
    if type(rows) is list:
        for row in rows:
            for button in row if type(row) is list else ():
                if (
                    type(button) is dict
                    and button.get("callback_data") == data
                    and type(button.get("text")) is str
                ):
                    return str(button["text"])
    match = _CALLBACK.fullmatch(data)
    if match is None:
        return data
    index, kind, rest = match.groups()
    if kind == ":":
        return rest
    # The keyboard is gone (Telegram leaves it out of old messages): the number stands for the
    # label, as on channels without buttons.
    return str(int(index) + 1)


def _units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` UTF-16 units, at line breaks where possible,
    else at spaces, else anywhere (never inside a surrogate pair)."""
    if _units(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while _units(rest) > limit:
        # The longest prefix within the limit, in code points.
        cut = min(len(rest), limit)
        while _units(rest[:cut]) > limit:
            cut -= 1
        window = rest[:cut]
        at = window.rfind("\n")
        if at <= 0:
            at = window.rfind(" ")
        if at <= 0:
            parts.append(window)
            rest = rest[cut:]
            continue
        parts.append(window[:at])
        rest = rest[at + 1 :]
    if rest:
        parts.append(rest)
    return [part for part in parts if part] or [text[:limit]]
