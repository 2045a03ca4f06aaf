"""Named, reusable validators: each turns what a customer wrote into a normalised value or a
reason code, and the flow picks the re-ask text for that reason.

A validator never guesses. "1.5" is not 15 and "2 or 3" is not 23: anything ambiguous comes
back as an :class:`Invalid` with a specific reason, so the customer is asked again precisely.

Flows refer to validators by name through :data:`VALIDATORS`; the plain ``parse_*`` functions
are usable on their own (and are what the table tests exercise).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

__all__ = [
    "VALIDATORS",
    "CatalogItem",
    "Invalid",
    "Valid",
    "ValidationContext",
    "ValidationResult",
    "Validator",
    "parse_address",
    "parse_catalog_choice",
    "parse_email",
    "parse_files_command",
    "parse_integer",
    "parse_phone",
    "parse_yes_no",
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

_SPACES = re.compile(r"\s+")
# Emoji variation selectors and skin tones: "👍🏽" must read like "👍".
_EMOJI_NOISE = re.compile("[\ufe0e\ufe0f\U0001f3fb-\U0001f3ff]")


def _fold(text: str) -> str:
    """Lower case, ё as е, whitespace folded: the form all word matching works on."""
    return _SPACES.sub(" ", text.replace("ё", "е").replace("Ё", "Е").lower()).strip()


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:'[^\W_]+)?", _fold(text))


# --------------------------------------------------------------------------------------------
# address


def parse_address(text: str, *, min_length: int = 5, max_length: int = 200) -> ValidationResult:
    """Trim and fold inner whitespace; the result must be ``min_length``..``max_length``
    characters long and contain a letter (a bare number is not an address)."""
    folded = _SPACES.sub(" ", text).strip()
    if len(folded) < min_length:
        return Invalid("too_short")
    if len(folded) > max_length:
        return Invalid("too_long")
    if not any(ch.isalpha() for ch in folded):
        return Invalid("no_letters")
    return Valid(folded)


# --------------------------------------------------------------------------------------------
# phone

# A run of digits with the separators people type inside phone numbers.
_DIGIT_RUN = re.compile(r"\+?\d[\d\s\-().]*\d")


def parse_phone(text: str, *, region: str = "KG") -> ValidationResult:
    """Find a valid phone number in ``text`` and return it as E.164 (``+996555123456``).

    Local forms are read in ``region``. ``PhoneNumberMatcher`` finds numbers inside sentences;
    it skips bare national numbers (``555123456``) and a country code without ``+``
    (``996555123456``), so digit runs are tried again explicitly.
    """
    for match in phonenumbers.PhoneNumberMatcher(text, region):
        if phonenumbers.is_valid_number(match.number):
            return Valid(
                phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            )
    for run in _DIGIT_RUN.findall(text):
        digits = re.sub(r"\D", "", run)
        if not 6 <= len(digits) <= 15:
            continue
        # A leading + means the customer gave the country code: never read it as local.
        candidates = ["+" + digits] if run.startswith("+") else [digits, "+" + digits]
        for candidate in candidates:
            try:
                number = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return Valid(
                    phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                )
    return Invalid("invalid")


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
# Big words only matter for saying "too many", so they stand alone.
_BIG = {"сто": 100, "hundred": 100, "тысяча": 1000, "тысячу": 1000, "thousand": 1000}
_UNITS = _RU_UNITS | _EN_UNITS
_TENS = _RU_TENS | _EN_TENS
_FRACTION_WORDS = {"пол", "полторы", "полтора", "половина", "половину", "half", "halves"}
_NEGATIVE_WORDS = {"минус", "minus"}

# "2 бутыли по 19 л": the 19 is the bottle's volume, not a second quantity.
_VOLUME = re.compile(r"\d+\s*(?:л|литр\w*|l|liters?|litres?)(?![^\W\d_])")
_EXPONENT = re.compile(r"\d(?:[.,]\d+)?e[+-]?\d", re.IGNORECASE)
_DECIMAL = re.compile(r"\d[.,]\d|\d/\d")
_TOKEN = re.compile(r"\d+|[^\W\d_]+")


def _numbers(text: str) -> list[tuple[int, int]]:
    """(value, start offset) of every number in ``text``, digits or words; a tens word directly
    followed by a unit word is one number ("двадцать пять", "twenty-five")."""
    found: list[tuple[int, int]] = []
    pending_tens: tuple[int, int, int] | None = None  # value, start, end
    for token in _TOKEN.finditer(text):
        word = token.group()
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
    """Read one whole number, in digits or in Russian/English words, units allowed around it
    ("10 бутылей", "3шт", "twenty-five bottles").

    Reasons: ``not_a_number`` (nothing to read, or an exponent), ``decimal``, ``negative``,
    ``range`` (two or more different numbers: "2-3", "2 или 3"), ``too_small``, ``too_large``.
    """
    folded = _fold(text)
    if _EXPONENT.search(folded):
        return Invalid("not_a_number")
    words = set(_words(folded))
    if _DECIMAL.search(folded) or words & _FRACTION_WORDS:
        return Invalid("decimal")
    numbers = _numbers(_VOLUME.sub(" ", folded))
    if not numbers:
        return Invalid("not_a_number")
    first_value, first_start = numbers[0]
    before = _VOLUME.sub(" ", folded)[:first_start].rstrip()
    if before.endswith(("-", "−", "–", "—")) or (
        _words(before)[-1:] and _words(before)[-1] in _NEGATIVE_WORDS
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


# --------------------------------------------------------------------------------------------
# yes / no

_YES_PHRASES = {
    "да", "ага", "угу", "конечно", "верно", "все верно", "правильно", "все правильно", "точно",
    "подтверждаю", "подтвердить", "ок", "окей", "хорошо", "давай", "давайте", "оформляйте",
    "yes", "yep", "yeah", "yup", "sure", "ok", "okay", "confirm", "confirmed", "correct",
    "right", "all right", "alright", "go ahead", "of course",
    "ооба", "макул", "туура", "болот",
}  # fmt: skip
_NO_PHRASES = {
    "нет", "неа", "не надо", "не нужно", "неправильно", "не правильно", "неверно", "не верно",
    "не то", "не подтверждаю", "no", "nope", "nah", "no way", "not correct", "incorrect",
    "wrong", "not right", "жок", "туура эмес", "керек эмес",
}  # fmt: skip
# Phrases that contain a yes word but do not mean yes.
_UNSURE_PHRASES = {
    "не знаю", "не уверен", "не уверена", "может быть", "может", "наверное", "возможно",
    "maybe", "not sure", "i don't know", "dont know", "don't know", "perhaps", "билбейм",
}  # fmt: skip
# Words that may surround an answer without changing it: "да, пожалуйста", "yes, thanks".
_FILLER = {
    "пожалуйста", "спасибо", "так", "ну", "и", "а", "все", "всё", "please", "thanks", "thank",
    "you", "it", "is", "that's", "thats", "that", "all", "oh", "well", "рахмат", "sir",
}  # fmt: skip
_YES_SYMBOLS = {"+", "👍", "👌", "✅", "✔", "☑"}
_NO_SYMBOLS = {"-", "👎", "❌", "✖", "🚫"}
_LONGEST_PHRASE = max(len(p.split()) for p in _YES_PHRASES | _NO_PHRASES | _UNSURE_PHRASES)


def parse_yes_no(text: str, *, buttons: Sequence[str] = ()) -> ValidationResult:
    """Read a yes or a no (Russian, English, Kyrgyz, ``+``/``-``, 👍/👎) as ``True``/``False``.

    Only whole words and phrases count ("нет" inside "монета" is not a no), and the message may
    hold nothing else but filler ("да, пожалуйста"): "да, но адрес другой" is not a clean yes,
    so it is asked again rather than turned into an order. ``buttons`` are the step's labels,
    ``[yes, no]``; typing a label counts too. Reason: ``unclear``.
    """
    bare = _EMOJI_NOISE.sub("", text).strip()
    for index, label in enumerate(buttons[:2]):
        if _fold(label) == _fold(bare):
            return Valid(index == 0)
    symbols = {ch for ch in bare if not ch.isspace()}
    if symbols and symbols <= _YES_SYMBOLS:
        return Valid(True)
    if symbols and symbols <= _NO_SYMBOLS:
        return Valid(False)
    words = _words(bare.replace("’", "'"))
    # "ок 👎" contradicts itself; emoji count, "+"/"-" only alone (they also separate words).
    kinds: set[str] = set()
    if symbols & (_YES_SYMBOLS - {"+"}):
        kinds.add("yes")
    if symbols & (_NO_SYMBOLS - {"-"}):
        kinds.add("no")
    position = 0
    while position < len(words):
        for size in range(min(_LONGEST_PHRASE, len(words) - position), 0, -1):
            phrase = " ".join(words[position : position + size])
            kind = (
                "yes" if phrase in _YES_PHRASES
                else "no" if phrase in _NO_PHRASES
                else "unsure" if phrase in _UNSURE_PHRASES
                else None
            )  # fmt: skip
            if kind is not None:
                kinds.add(kind)
                position += size
                break
        else:
            if words[position] not in _FILLER:
                return Invalid("unclear")
            position += 1
    if kinds == {"yes"}:
        return Valid(True)
    if kinds == {"no"}:
        return Valid(False)
    return Invalid("unclear")


# --------------------------------------------------------------------------------------------
# email and catalog choice


def parse_email(text: str) -> ValidationResult:
    """A syntactically valid e-mail address (no DNS lookup), normalised by ``email-validator``.
    A sentence around it is allowed: the one word holding an ``@`` is taken."""
    candidates = [word.strip(".,;:!?()<>\"'") for word in text.split() if "@" in word]
    if len(candidates) != 1:
        return Invalid("invalid")
    try:
        info = validate_email(candidates[0], check_deliverability=False)
    except EmailNotValidError:
        return Invalid("invalid")
    return Valid(info.normalized)


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One choice: ``id`` is stored, ``names`` (any language) are what a customer may type."""

    id: str
    names: tuple[str, ...]


def parse_catalog_choice(text: str, items: Sequence[CatalogItem]) -> ValidationResult:
    """Pick an item by one of its names or by its number (1..n, in catalog order), ignoring
    case and surrounding punctuation. Names win: with items named "15 %" and "30 %", "30" is
    the second item, not the thirtieth. Returns the item id. Reason: ``unknown_choice``."""
    answer = " ".join(_words(text))
    for item in items:
        if any(" ".join(_words(name)) == answer for name in (item.id, *item.names)):
            return Valid(item.id)
    if answer.isdigit():
        index = int(answer)
        if 1 <= index <= len(items):
            return Valid(items[index - 1].id)
    return Invalid("unknown_choice")


# --------------------------------------------------------------------------------------------
# model files: the step takes attachments (the engine handles those); as text it understands
# only its two buttons

FILES_CONTINUE = "continue"
FILES_REMOVE_LAST = "remove_last"
_CONTINUE_PHRASES = {
    "продолжить", "продолжай", "продолжаем", "дальше", "далее", "готово", "все", "это все",
    "continue", "next", "done", "that's all", "thats all", "finish",
}  # fmt: skip
_REMOVE_PHRASES = {
    "удалить последний", "удали последний", "удалить последний файл", "удалить",
    "remove the last one", "remove last", "remove the last", "remove the last file",
    "delete last", "delete the last one", "remove",
}  # fmt: skip
FILE_REASONS = frozenset(
    {
        "file_expected",  # text where a file was wanted
        "no_files",  # continue (or remove) with no file yet
        "too_many",
        "unsupported",  # not a 3D model
        "image",  # a picture, not a 3D model
        "damaged",  # looks like a model but is truncated or broken
        "empty",
        "too_large",  # over MAX_UPLOAD_MB
        "telegram_limit",  # over what the Telegram Bot API lets a bot download (20 MB)
        "download_failed",
    }
)


def parse_files_command(text: str, *, buttons: Sequence[str] = ()) -> ValidationResult:
    """``continue`` or ``remove_last`` from a button label (``[continue, remove last]``) or the
    usual words for them. Reason: ``file_expected``."""
    answer = " ".join(_words(text.replace("’", "'")))
    commands = (FILES_CONTINUE, FILES_REMOVE_LAST)
    for command, label in zip(commands, buttons[:2], strict=False):
        if answer == " ".join(_words(label)):
            return Valid(command)
    if answer in _CONTINUE_PHRASES:
        return Valid(FILES_CONTINUE)
    if answer in _REMOVE_PHRASES:
        return Valid(FILES_REMOVE_LAST)
    return Invalid("file_expected")


def _check_files(params: Mapping[str, Any]) -> None:
    _only(params, {"max_files"})
    high = _int_param(params, "max_files", 10)
    if high is None or high < 1:
        raise ValueError("max_files must be at least 1")


# --------------------------------------------------------------------------------------------
# the registry


def _no_params(params: Mapping[str, Any]) -> None:
    if params:
        raise ValueError(f"takes no params, got {sorted(params)}")


def _only(params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"unknown params {sorted(unknown)} (allowed: {sorted(allowed)})")


def _int_param(params: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"param {name!r} must be an integer, got {value!r}")
    return value


def _check_address(params: Mapping[str, Any]) -> None:
    _only(params, {"min_length", "max_length"})
    low = _int_param(params, "min_length", 5)
    high = _int_param(params, "max_length", 200)
    if low is None or high is None or not 0 < low <= high:
        raise ValueError("needs 0 < min_length <= max_length")


def _run_address(text: str, ctx: ValidationContext) -> ValidationResult:
    return parse_address(
        text,
        min_length=int(ctx.params.get("min_length", 5)),
        max_length=int(ctx.params.get("max_length", 200)),
    )


def _check_integer(params: Mapping[str, Any]) -> None:
    _only(params, {"min", "max"})
    low = _int_param(params, "min", 1)
    high = _int_param(params, "max", None)
    if low is None or (high is not None and high < low):
        raise ValueError("needs min <= max")


def _run_integer(text: str, ctx: ValidationContext) -> ValidationResult:
    high = ctx.params.get("max")
    return parse_integer(
        text, minimum=int(ctx.params.get("min", 1)), maximum=None if high is None else int(high)
    )


def _catalog_items(params: Mapping[str, Any]) -> list[CatalogItem]:
    raw = params.get("items")
    if not isinstance(raw, list) or not raw:
        raise ValueError("param 'items' must be a non-empty list")
    items = []
    for entry in raw:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            raise ValueError("each item needs a string 'id'")
        names = entry.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"item {entry['id']!r}: 'names' must be a list of strings")
        items.append(CatalogItem(id=entry["id"], names=tuple(names)))
    return items


def _check_catalog(params: Mapping[str, Any]) -> None:
    _only(params, {"items"})
    _catalog_items(params)


def _run_catalog(text: str, ctx: ValidationContext) -> ValidationResult:
    items = _catalog_items(ctx.params)
    if len(ctx.buttons) == len(items):
        # The step's button labels (in the dialog's language) name the items too.
        items = [
            CatalogItem(item.id, (*item.names, label))
            for item, label in zip(items, ctx.buttons, strict=True)
        ]
    return parse_catalog_choice(text, items)


_INTEGER_REASONS = frozenset(
    {"not_a_number", "decimal", "negative", "range", "too_small", "too_large"}
)

VALIDATORS: dict[str, Validator] = {
    validator.name: validator
    for validator in (
        Validator(
            "address",
            _run_address,
            frozenset({"too_short", "too_long", "no_letters"}),
            _check_address,
        ),
        Validator(
            "phone",
            lambda text, ctx: parse_phone(text, region=ctx.phone_region),
            frozenset({"invalid"}),
            _no_params,
        ),
        # "quantity" and "integer" read the same way; two names keep flows self-explanatory.
        Validator("quantity", _run_integer, _INTEGER_REASONS, _check_integer),
        Validator("integer", _run_integer, _INTEGER_REASONS, _check_integer),
        Validator(
            "yes_no",
            lambda text, ctx: parse_yes_no(text, buttons=ctx.buttons),
            frozenset({"unclear"}),
            _no_params,
            lambda params: frozenset({"yes", "no"}),
        ),
        Validator("email", lambda text, ctx: parse_email(text), frozenset({"invalid"}), _no_params),
        # A person's name reads like a short address: trimmed, bounded, with letters in it.
        Validator(
            "person_name",
            lambda text, ctx: parse_address(
                text,
                min_length=int(ctx.params.get("min_length", 2)),
                max_length=int(ctx.params.get("max_length", 100)),
            ),
            frozenset({"too_short", "too_long", "no_letters"}),
            _check_address,
        ),
        Validator(
            "catalog_choice",
            _run_catalog,
            frozenset({"unknown_choice"}),
            _check_catalog,
            lambda params: frozenset(item.id for item in _catalog_items(params)),
        ),
        # Model files arrive as attachments, which the engine takes; as text the step only
        # understands "continue" and "remove the last one".
        Validator(
            "model_files",
            lambda text, ctx: parse_files_command(text, buttons=ctx.buttons),
            FILE_REASONS,
            _check_files,
        ),
    )
}
"""Every validator a flow may name, by name."""
