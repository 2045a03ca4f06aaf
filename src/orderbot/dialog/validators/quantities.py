"""Quantities: one whole number read from what a customer wrote, in digits or in Russian,
English or Kyrgyz number words, with units allowed around it.

Separate from the other parsers because reading numbers safely (no guessing at "1.5", "2-3",
"2 бутыли по 19 л") takes its own word tables and rules.
"""

from __future__ import annotations

import re

from orderbot.dialog.validators.base import Invalid, Valid, ValidationResult, fold, split_words

__all__ = ["NUMBER_WORDS", "parse_integer"]


# --------------------------------------------------------------------------------------------
# integers (quantities), with number words

_RU_UNITS = {
    "ноль": 0,
    "один": 1, "одна": 1, "одну": 1, "одно": 1,
    "два": 2, "две": 2,
    "три": 3, "четыре": 4, "пять": 5, "шесть": 6, "семь": 7, "восемь": 8, "девять": 9,
    "десять": 10, "одиннадцать": 11, "двенадцать": 12, "тринадцать": 13, "четырнадцать": 14,
    "пятнадцать": 15, "шестнадцать": 16, "семнадцать": 17, "восемнадцать": 18,
    "девятнадцать": 19,
}  # fmt: skip
_RU_TENS = {"двадцать": 20, "тридцать": 30, "сорок": 40, "пятьдесят": 50, "шестьдесят": 60,
            "семьдесят": 70, "восемьдесят": 80, "девяносто": 90}  # fmt: skip
_EN_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}  # fmt: skip
_EN_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
            "eighty": 80, "ninety": 90}  # fmt: skip
_KY_UNITS = {
    "нөл": 0, "бир": 1, "эки": 2, "үч": 3, "төрт": 4, "беш": 5, "алты": 6, "жети": 7,
    "сегиз": 8, "тогуз": 9,
}  # fmt: skip
# Kyrgyz says 11 as "он бир" (ten one): "он" is a tens word like "двадцать".
_KY_TENS = {"он": 10, "жыйырма": 20, "отуз": 30, "кырк": 40, "элүү": 50, "алтымыш": 60,
            "жетимиш": 70, "сексен": 80, "токсон": 90}  # fmt: skip
# Big words only matter for saying "too many", so they stand alone.
_BIG = {"сто": 100, "hundred": 100, "тысяча": 1000, "тысячу": 1000, "thousand": 1000,
        "жүз": 100, "миң": 1000}  # fmt: skip
_UNITS = _RU_UNITS | _EN_UNITS | _KY_UNITS
_TENS = _RU_TENS | _EN_TENS | _KY_TENS
NUMBER_WORDS = frozenset(_UNITS) | frozenset(_TENS)
"""Every word read as a number below 100 ("три", "twenty", "төрт"), for finding quantities
inside longer messages."""
_FRACTION_WORDS = {"пол", "полторы", "полтора", "половина", "половину", "half", "halves", "жарым"}
_NEGATIVE_WORDS = {"минус", "minus"}

# "2 бутыли по 19 л": the 19 is the bottle's volume, not a second quantity.
_VOLUME = re.compile(r"\d+\s*(?:л|литр\w*|l|liters?|litres?)(?![^\W\d_])")
_EXPONENT = re.compile(r"\d(?:[.,]\d+)?e[+-]?\d", re.IGNORECASE)
_DECIMAL = re.compile(r"\d[.,]\d|\d/\d")
_TOKEN = re.compile(r"\d+|[^\W\d_]+")


# Kyrgyz case endings on a number ("бешти алып келиңиз": bring five): the number is the stem.
_KY_ENDINGS = ("ни", "ны", "ну", "нү", "ти", "ты", "ту", "тү", "ди", "ды", "ду", "дү")
_KY_NUMBERS = frozenset(_KY_UNITS) | frozenset(_KY_TENS)


def _kyrgyz_stem(word: str) -> str:
    if word in _UNITS or word in _TENS or not word.endswith(_KY_ENDINGS):
        return word
    return word[:-2] if word[:-2] in _KY_NUMBERS else word


def _numbers(text: str) -> list[tuple[int, int]]:
    """(value, start offset) of every number in ``text``, digits or words; a tens word directly
    followed by a unit word is one number ("двадцать пять", "twenty-five")."""
    found: list[tuple[int, int]] = []
    pending_tens: tuple[int, int, int] | None = None  # value, start, end
    for token in _TOKEN.finditer(text):
        word = _kyrgyz_stem(token.group())
        if pending_tens is not None:
            tens, start, end = pending_tens
            pending_tens = None
            gap = text[end : token.start()]
            if word in _UNITS and 0 < _UNITS[word] < 10 and re.fullmatch(r"[\s-]*", gap):
                found.append((tens + _UNITS[word], start))
                continue
            found.append((tens, start))
        if word.isdigit():
            found.append((int(word), token.start()))
        elif word in _TENS:
            pending_tens = (_TENS[word], token.start(), token.end())
        elif word in _UNITS:
            found.append((_UNITS[word], token.start()))
        elif word in _BIG:
            found.append((_BIG[word], token.start()))
    if pending_tens is not None:
        found.append((pending_tens[0], pending_tens[1]))
    return found


def parse_integer(text: str, *, minimum: int = 1, maximum: int | None = None) -> ValidationResult:
    """Read one whole number, in digits or in Russian/English/Kyrgyz words, units allowed around it
    ("10 бутылей", "3шт", "twenty-five bottles").

    Reasons: ``not_a_number`` (nothing to read, or an exponent), ``decimal``, ``negative``,
    ``range`` (two or more different numbers: "2-3", "2 или 3"), ``too_small``, ``too_large``.
    """
    folded = fold(text)
    if _EXPONENT.search(folded):
        return Invalid("not_a_number")
    words = set(split_words(folded))
    if _DECIMAL.search(folded) or words & _FRACTION_WORDS:
        return Invalid("decimal")
    numbers = _numbers(_VOLUME.sub(" ", folded))
    if not numbers:
        return Invalid("not_a_number")
    first_value, first_start = numbers[0]
    before = _VOLUME.sub(" ", folded)[:first_start].rstrip()
    if before.endswith(("-", "−", "–", "—")) or (
        split_words(before)[-1:] and split_words(before)[-1] in _NEGATIVE_WORDS
    ):
        return Invalid("negative")
    # "10 (десять)" says one number twice; only different numbers are ambiguous.
    if len({value for value, _ in numbers}) > 1:
        return Invalid("range")
    if first_value < minimum:
        return Invalid("too_small")
    if maximum is not None and first_value > maximum:
        return Invalid("too_large")
    return Valid(first_value)
