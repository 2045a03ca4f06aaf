"""How the dialog reads and writes words: phrase matching, placeholders, money. Pure helpers
shared by the engine and the catalog view (:mod:`orderbot.dialog.browse`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import Decimal

__all__ = ["money", "phrase", "phrases", "render"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WORD = re.compile(r"[^\W_]+")


def phrase(text: str) -> str:
    """``text`` as words are compared: lower case, ё = е, punctuation and emoji ignored."""
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
