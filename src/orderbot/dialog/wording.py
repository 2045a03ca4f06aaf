"""How the dialog reads and writes words: phrase matching, placeholders, money. Pure helpers
shared by the engine and the catalog view (:mod:`orderbot.dialog.browse`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import Decimal

__all__ = ["close_word", "money", "phrase", "phrases", "render"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WORD = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=8192)
def phrase(text: str) -> str:
    """``text`` as words are compared: lower case, ё = е, punctuation and emoji ignored.
    Cached: one message is compared several ways (command, question, button, answer)."""
    return " ".join(_WORD.findall(text.replace("ё", "е").replace("Ё", "Е").lower()))


@functools.cache
def phrases(words: tuple[str, ...]) -> frozenset[str]:
    """The phrases of ``words``. A flow's word lists are fixed once loaded: normalised once,
    not per message."""
    return frozenset(phrase(w) for w in words)


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with its ``{name}`` placeholders filled from ``values`` (unknown ones kept).
    One pass with a function: a value containing "{phone}" is inserted as is, never expanded."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def money(amount: Decimal) -> str:
    """``1 500`` or ``12.50``: thousands spaced, cents only when there are any."""
    if amount == amount.to_integral_value():
        return f"{int(amount):,}".replace(",", " ")
    return f"{amount:,.2f}".replace(",", " ")


def close_word(word: str, known: frozenset[str] | set[str]) -> str | None:
    """The one word of ``known`` that ``word`` misspells by a single letter (one left out,
    added, changed, or two swapped: "конешно", "подтвердаю"), or None. Short words never
    count: "да" is one letter away from too many other words."""
    if len(word) < 5 or word in known:
        return None
    found = {other for other in known if len(other) >= 5 and _one_edit(word, other)}
    return found.pop() if len(found) == 1 else None


def _one_edit(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]
