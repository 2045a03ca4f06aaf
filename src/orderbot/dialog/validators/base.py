"""What every validator shares: the outcome of reading an answer (:class:`Valid` or
:class:`Invalid`), what a validator may know besides the text (:class:`ValidationContext`), a
validator as flows see it (:class:`Validator`), and the text folding all word matching uses.

Separate from :mod:`orderbot.dialog.validators.registry` (the registry) so that the parsers in
:mod:`orderbot.dialog.validators.contacts`, :mod:`orderbot.dialog.validators.quantities` and
:mod:`orderbot.dialog.validators.choices` can use these without importing the registry that
names them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EMOJI_NOISE",
    "SPACES",
    "Invalid",
    "Valid",
    "ValidationContext",
    "ValidationResult",
    "Validator",
    "fold",
    "split_words",
]


@dataclass(frozen=True, slots=True)
class Valid:
    """The answer is acceptable; ``value`` is normalised and JSON-serialisable."""

    value: Any


@dataclass(frozen=True, slots=True)
class Invalid:
    """The answer is not acceptable; ``reason`` selects the flow's re-ask text."""

    reason: str


ValidationResult = Valid | Invalid


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """What a validator may know besides the text: the step's params, the phone region from
    the settings, and the step's button labels in the dialog's language."""

    params: Mapping[str, Any] = field(default_factory=dict)
    phone_region: str = "KG"
    buttons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Validator:
    """A named validator as flows see it.

    ``reasons`` lists every reason code it can return, so ``load_flow`` can insist that each
    has a re-ask text; ``check_params`` raises ``ValueError`` on params it cannot use, so a
    broken flow fails at load time instead of in front of a customer. ``outcomes`` lets
    ``load_flow`` check that a branching ``next`` covers every value.
    """

    name: str
    run: Callable[[str, ValidationContext], ValidationResult]
    reasons: frozenset[str]
    check_params: Callable[[Mapping[str, Any]], None]
    outcomes: Callable[[Mapping[str, Any]], frozenset[str]] | None = None
    """The values a step may branch on (as ``next:`` keys), or ``None`` if they are open-ended."""


# --------------------------------------------------------------------------------------------
# text helpers

SPACES = re.compile(r"\s+")
# Emoji variation selectors and skin tones: "👍🏽" must read like "👍".
EMOJI_NOISE = re.compile("[\ufe0e\ufe0f\U0001f3fb-\U0001f3ff]")


def fold(text: str) -> str:
    """Lower case, ё as е, whitespace folded: the form all word matching works on."""
    return SPACES.sub(" ", text.replace("ё", "е").replace("Ё", "Е").lower()).strip()


def split_words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:'[^\W_]+)?", fold(text))
