"""Understanding a message: every detail it gives, whatever the current question asks.

Customers write "Добрый вечер, 3 бутыли на Манаса 40, кв 12, номер 0770 11 22 33" instead of
answering one question at a time. :func:`read` finds in one message every detail the flow
collects: phone numbers anywhere, e-mail addresses, quantities with their unit words ("3
бутыли", "алты бөтөлкө"), labelled lines ("Адрес: ... Телефон: ..."), corrections that name
a field ("change the address to ...", "номер другой: ...", "не 3, а 4"); the delivery address
(or a name) is what remains once those and the filler words (greetings, "please", "I want
to order") are out. :func:`is_question` tells a question from an answer, :func:`faq_answer`
picks the flow's answer to it.

Pure: a function of the flow, the dialog's answers so far, the text and the dialog language.
It never guesses: a detail read two different ways ("0555 111 222 или 0777 333 444"), a
number without a unit outside the quantity question, a remainder that does not look like an
address outside the address question, are left out, and the dialog asks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from orderbot.dialog.flow import Flow, Step
from orderbot.dialog.validators.base import Invalid, ValidationContext
from orderbot.dialog.validators.contacts import parse_email
from orderbot.dialog.validators.quantities import NUMBER_WORDS
from orderbot.dialog.validators.registry import VALIDATORS
from orderbot.dialog.wording import phrase

__all__ = [
    "FREE_TEXT",
    "Reading",
    "detail_steps",
    "faq_answer",
    "is_question",
    "known_details",
    "read",
    "wants_edit",
    "wants_repeat",
]

FREE_TEXT = frozenset({"address", "person_name"})
"""Validators whose answer is free text: what remains of a message once the details are out."""
_COUNTED = frozenset({"quantity", "integer"})
_TYPED = frozenset({"phone", "email"}) | _COUNTED

# --------------------------------------------------------------------------------------------
# words


def _alternation(words: frozenset[str] | tuple[str, ...]) -> str:
    """A regex alternation of ``words``, longest first, "е" also matching "ё"."""
    ordered = sorted(words, key=len, reverse=True)
    return "|".join(re.escape(w).replace("е", "[её]") for w in ordered)


# Greetings, politeness and "I want to order" around the details: never part of an address.
_FILLER = frozenset(
    {
        # greetings
        "здравствуйте", "здрасте", "здравствуй", "добрый день", "добрый вечер", "доброе утро",
        "доброй ночи", "привет", "приветствую", "салам", "салам алейкум", "ассалому алейкум",
        "ассаламу алейкум", "саламатсызбы", "саламатсыңарбы", "кандай", "hello", "hi", "hey",
        "good morning", "good afternoon", "good evening", "dear",
        # politeness
        "пожалуйста", "пожалуйсто", "пж", "пжл", "спасибо", "плиз", "please", "pls", "thanks",
        "thank you", "рахмат", "сураныч",
        # wanting water, ordering
        "хочу", "хотел бы", "хотела бы", "хотим", "хотелось бы", "заказать", "закажу", "заказ",
        "мне", "нам", "нужно", "нужна", "нужен", "нужны", "надо", "привезите", "привезти",
        "доставьте", "доставить", "доставка", "доставку", "воду", "вода", "воды", "питьевой",
        "i", "we", "want", "would like", "to order", "order", "need", "to", "deliver",
        "delivery", "some", "water", "please bring", "bring",
        "бизге", "мага", "суу", "керек", "алып келиңиз", "жеткириңиз", "заказ кылам",
        # the names of details, left behind once their values are out
        "адрес", "адресу", "по адресу", "на адрес", "адрес доставки", "номер", "телефон",
        "тел", "мой", "мой номер", "мой телефон", "номер телефона", "контакт", "address",
        "my", "phone", "number", "my number", "phone number", "дарек", "дарегим", "номерим",
        "email", "e-mail", "почта", "почту",
        # joints
        "и", "а", "на", "по", "вот", "это", "так", "ну", "ой", "and", "at", "is", "the", "it's",
        "или", "or", "же",
        "мой адрес", "my address", "жана", "ал эми",
    }
)  # fmt: skip
# A correction: the customer changes what they said before.
_CUES = frozenset(
    {
        "не тот", "не та", "не то", "не туда", "другой", "другая", "другое", "другую",
        "измените", "изменить", "измени", "поменяйте", "поменять", "поменяй", "исправьте",
        "исправить", "замените", "заменить", "смените", "ой", "ой нет", "нет", "вернее",
        "точнее", "извините", "ошибся", "ошиблась", "change", "update", "correct", "not",
        "actually", "sorry", "oops", "wrong", "instead", "башка", "өзгөртүңүз", "оңдоңуз",
        "туура эмес", "давайте", "лучше",
    }
)  # fmt: skip
# Where a remainder without a house number is still clearly an address.
_ADDRESS_WORDS = frozenset(
    {
        "ул", "улица", "улице", "мкр", "микрорайон", "проспект", "пр", "пр-т", "переулок",
        "пер", "дом", "кв", "квартира", "подъезд", "этаж", "жилмассив", "ж/м", "бульвар",
        "street", "st", "avenue", "ave", "road", "rd", "apt", "apartment", "house", "floor",
        "көчө", "көчөсү", "үй", "батир", "кабат",
    }
)  # fmt: skip
_QUESTION_OPENINGS = frozenset(
    {
        "сколько", "как", "когда", "где", "почему", "зачем", "какой", "какая", "какое",
        "какие", "какую", "каким", "кто", "что", "чем", "куда", "откуда", "можно", "разве",
        "подскажите", "скажите", "во сколько", "до скольки", "есть ли", "а есть", "вы",
        "how", "what", "when", "where", "why", "who", "which", "do", "does", "can", "could",
        "is", "are", "will", "would", "whats", "what's",
        "канча", "качан", "кайда", "кантип", "эмне", "эмнеге", "ким", "кайсы", "барбы",
        "болобу", "кандай",
    }
)  # fmt: skip
# "как обычно" is an order, not a question; "вы" opens a question only with a verb after it.
_NOT_QUESTIONS = frozenset(
    {"как обычно", "как в прошлый раз", "как всегда", "вы знаете", "what ever"}
)
_LEADING = frozenset(
    {"а", "и", "ну", "так", "ой", "извините", "простите", "and", "but", "so", "sorry", "ok",
     "hi", "hello", "здравствуйте", "привет", "салам", "добрый день", "добрый вечер"}
)  # fmt: skip
_INDEFINITE = re.compile(r"([^\W\d_])-(то|нибудь|либо)(?![^\W_])", re.I)
_QUESTION_VERBS_AFTER_VY = frozenset(
    {"доставляете", "работаете", "принимаете", "привозите", "можете", "возите", "даете"}
)
# "Как обычно": the whole message asks for the last order again.
_REPEAT = frozenset(
    {
        "как обычно", "как в прошлый раз", "как в прошлый", "как всегда", "повтори",
        "повторить", "повторите", "повторить заказ", "повтори заказ", "повторите заказ",
        "то же самое", "тоже самое", "то же", "да повторить", "same again", "same as last time",
        "same as before", "repeat", "repeat the order", "repeat my order", "as usual",
        "the usual", "баягыдай", "мурункудай", "кайтала", "кайталаңыз", "кайталоо",
    }
)  # fmt: skip
# "номер прежний", "same number": one detail as last time.
_SAME = re.compile(
    r"(?<![^\W_])(?:прежн\w*|тот же|та же|тот же самый|старый|старого|same|as before|"
    r"as last time|баягы|мурунку)(?![^\W_])",
    re.I,
)
# "туда же": the address as last time, without naming it.
_SAME_PLACE = re.compile(
    r"(?<![^\W_])(?:туда же|по тому же адресу|на тот же адрес|same place|same address|"
    r"ошол жерге|баягы жерге)(?![^\W_])",
    re.I,
)
_NUMBER_WORDS = "|".join(re.escape(w) for w in sorted(NUMBER_WORDS, key=len, reverse=True))
_NUMBER = rf"\d+|{_NUMBER_WORDS}"
# A count before its unit: digits, or number words ("двадцать пять", "он бир"); never two
# runs of digits ("100 4 бутыли" is a house number and a count).
_COUNT = rf"\d+|(?:{_NUMBER_WORDS})(?:[\s-]+(?:{_NUMBER_WORDS}))?"
_WORD_EDGE_L = r"(?<![^\W_])"
_WORD_EDGE_R = r"(?![^\W_])"
_SEPARATORS = re.compile(r"[,;\n]+")


@functools.cache
def _edge_pattern(words: frozenset[str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    alternation = _alternation(words)
    lead = re.compile(rf"^(?:[\s\W]*{_WORD_EDGE_L}(?:{alternation}){_WORD_EDGE_R})+", re.I)
    trail = re.compile(rf"(?:{_WORD_EDGE_L}(?:{alternation}){_WORD_EDGE_R}[\s\W]*)+$", re.I)
    return lead, trail


def _strip_words(text: str, words: frozenset[str]) -> str:
    """``text`` without ``words`` at its beginning and end (and the punctuation between)."""
    lead, trail = _edge_pattern(words)
    stripped = lead.sub("", text)
    if stripped != text:  # the punctuation after a greeting: "Здравствуйте! Манаса 40"
        stripped = stripped.lstrip(" \t,;:—–-!.?)")
    # A leading minus may be the customer's ("-5"); a trailing dash is left by a detail taken out.
    return trail.sub("", stripped).strip(" \t,;:").rstrip(" \t—–-")


_EDGE_WORDS = _FILLER | _CUES
_EDGE_FIRST = frozenset(phrase(w).split()[0] for w in _EDGE_WORDS)
_EDGE_LAST = frozenset(phrase(w).split()[-1] for w in _EDGE_WORDS)


def _trimmed(piece: str) -> str:
    said = phrase(piece).split()
    if not said or (said[0] not in _EDGE_FIRST and said[-1] not in _EDGE_LAST):
        # Neither end is a filler word: the regexes would change nothing (the common case).
        return piece.strip(" \t,;:").rstrip(" \t—–-")
    return _strip_words(piece, _EDGE_WORDS)


def clean_rest(text: str) -> str:
    """What remains of a message as an answer: filler phrases and empty pieces taken out of
    each comma-separated piece; the text itself when nothing had to go."""
    pieces = _SEPARATORS.split(text)
    kept = [_trimmed(piece) for piece in pieces]
    kept = [piece for piece in kept if any(ch.isalnum() for ch in piece)]
    if len(kept) == len(pieces) and all(k == p.strip() for k, p in zip(kept, pieces, strict=True)):
        return text.strip()
    return ", ".join(kept)


def looks_like_address(text: str) -> bool:
    """A street and a number ("Манаса 40"), or a word only addresses have ("мкр", "кв")."""
    words = set(re.findall(r"[^\W_]+(?:[/-][^\W_]+)?", text.lower()))
    has_letters = any(ch.isalpha() for ch in text)
    return has_letters and (any(ch.isdigit() for ch in text) or bool(words & _ADDRESS_WORDS))


# --------------------------------------------------------------------------------------------
# questions


def is_question(text: str) -> bool:
    """A question mark, or an interrogative opening in Russian, English or Kyrgyz ("сколько
    стоит", "do you deliver", "канча турат")."""
    if "?" in text or "？" in text:
        return any(ch.isalpha() for ch in text)
    # "где-то", "как-нибудь": indefinite, not interrogative.
    words = phrase(_INDEFINITE.sub(r"\1\2", text)).split()
    if not words:
        return False
    while len(words) > 1 and (words[0] in _LEADING or " ".join(words[:2]) in _LEADING):
        words = words[2:] if " ".join(words[:2]) in _LEADING else words[1:]
    if not words:
        return False
    if " ".join(words[:2]) in _NOT_QUESTIONS or " ".join(words[:4]) in _NOT_QUESTIONS:
        return False
    if words[0] == "вы":
        return len(words) > 1 and words[1] in _QUESTION_VERBS_AFTER_VY
    if words[0] in _QUESTION_OPENINGS or " ".join(words[:2]) in _QUESTION_OPENINGS:
        # "how many" is a question; "is" or "do" alone opening an answer is unusual, but
        # "do it" is not a question: one word after them is not enough.
        return words[0] not in {"do", "is", "are", "can", "will"} or len(words) > 2
    return len(words) > 1 and words[1] == "ли"


def faq_answer(flow: Flow, text: str, language: str) -> str | None:
    """The answer of the flow's FAQ entry whose keywords (word beginnings, any language) the
    question holds most of, or None."""
    said = " " + phrase(text)
    best: tuple[int, str] | None = None
    for entry in flow.faq:
        hits = sum(
            1
            for words in entry.keywords.values()
            for keyword in words
            if " " + phrase(keyword) in said
        )
        if hits and (best is None or hits > best[0]):
            best = (hits, entry.answer[flow.language(language)])
    return None if best is None else best[1]


# --------------------------------------------------------------------------------------------
# returning customers


def known_details(flow: Flow, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """What of a past order's ``data`` a new order may take again: the details the flow reads
    from messages (address, phone, quantity, name, e-mail), not its files or catalog lines."""
    if not data:
        return {}
    steps = detail_steps(flow)
    return {
        name: value
        for name, value in data.items()
        if name in steps
        and steps[name].validator in _TYPED | FREE_TEXT
        and isinstance(value, str | int)
        and not isinstance(value, bool)
    }


_EDIT = frozenset(
    {
        "изменить", "исправить", "поменять", "редактировать", "изменить заказ",
        "исправить заказ", "хочу изменить", "edit", "change", "modify", "edit order",
        "change order", "өзгөртүү", "оңдоо", "өзгөртөм",
    }
)  # fmt: skip


def wants_edit(text: str) -> bool:
    """ "Изменить", "edit": the customer wants to change something, not saying what."""
    return phrase(text) in _EDIT


def wants_repeat(text: str) -> bool:
    """ "Как обычно", "повтори", "same again": the customer wants the last order again."""
    return phrase(text) in _REPEAT


# --------------------------------------------------------------------------------------------
# details


@dataclass(frozen=True, slots=True)
class Reading:
    """What one message gives.

    ``values``: fields other than the current question's, read and valid (to store);
    ``answer``: the part of the message that answers the current question (for its validator),
    None when nothing does; ``change``: a field the customer wants to change without giving the
    new value ("адрес другой"); ``found``: whether any detail was found at all.
    """

    values: Mapping[str, Any] = field(default_factory=dict)
    answer: str | None = None
    change: str | None = None
    rest: str = ""


@dataclass(frozen=True, slots=True)
class _FlowWords:
    """What reading a message needs of a flow, worked out once per loaded flow."""

    steps: dict[str, Step]
    labels: tuple[tuple[str, str], ...]
    units: dict[str, tuple[str, ...]]
    by_validator: dict[str, list[str]]
    label_words: frozenset[str]
    """Every word of every label, to skip the label patterns for most messages."""


_FLOW_CACHE: dict[int, tuple[Flow, _FlowWords]] = {}


def _flow_words(flow: Flow) -> _FlowWords:
    # A flow is immutable and shared by every dialog; the cache holds the flow itself, so the
    # id it is filed under cannot be reused by another object while it is there.
    cached = _FLOW_CACHE.get(id(flow))
    if cached is not None and cached[0] is flow:
        return cached[1]
    if len(_FLOW_CACHE) > 64:
        _FLOW_CACHE.clear()
    steps = _detail_steps(flow)
    by_validator: dict[str, list[str]] = {}
    for name, target in steps.items():
        by_validator.setdefault(target.validator or "", []).append(name)
    labels = _labels(flow, steps)
    words = _FlowWords(
        steps=steps,
        labels=labels,
        units={
            name: tuple(w for ws in target.units.values() for w in ws)
            for name, target in steps.items()
            if target.units
        },
        by_validator=by_validator,
        label_words=frozenset(w for label, _ in labels for w in phrase(label).split()),
    )
    _FLOW_CACHE[id(flow)] = (flow, words)
    return words


def detail_steps(flow: Flow) -> dict[str, Step]:
    """The first step collecting each field a message may give (edit menus and choice steps
    without labels are left out: their answers come from buttons)."""
    return _flow_words(flow).steps


def _detail_steps(flow: Flow) -> dict[str, Step]:
    found: dict[str, Step] = {}
    for candidate in flow.steps.values():
        if candidate.field is None or candidate.returns_to is not None:
            continue
        if candidate.validator not in _TYPED | FREE_TEXT and not candidate.labels:
            continue
        found.setdefault(candidate.field, candidate)
    return found


def _validate(target: Step, text: str, region: str, language: str, flow: Flow) -> tuple[bool, Any]:
    assert target.validator is not None
    context = ValidationContext(
        target.params, region, target.buttons.get(flow.language(language), ())
    )
    result = VALIDATORS[target.validator].run(text, context)
    if isinstance(result, Invalid):
        return False, None
    return True, result.value


@functools.cache
def _label_patterns(
    labels: tuple[tuple[str, str], ...],
) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Patterns for "LABEL: value", "change the LABEL to value", "LABEL другой: value"."""
    names = _alternation(tuple(label for label, _ in labels))
    plain = re.compile(rf"{_WORD_EDGE_L}({names}){_WORD_EDGE_R}\s*[:：=]\s*", re.I)
    change = re.compile(
        rf"{_WORD_EDGE_L}(?:измени\w*|поменя\w*|исправ\w*|замени\w*|смени\w*|change|update|"
        rf"correct|fix)\s+(?:(?:the|my|мой|мою|мое|моё|мне)\s+)?({names}){_WORD_EDGE_R}"
        rf"\s*(?:(?:to|на|:)\s*)?",
        re.I,
    )
    other = re.compile(
        rf"{_WORD_EDGE_L}({names})\s+(?:другой|другая|другое|другую|не тот|не та|не то|"
        rf"неправильный|неправильная|неверный|поменялся|изменился|новый|новая|is wrong|"
        rf"was wrong|wrong|is different|changed|башка|туура эмес){_WORD_EDGE_R}\s*[:,\-—]?\s*",
        re.I,
    )
    return plain, change, other


def _detail_start(segment: str, words: _FlowWords, region: str) -> int:
    """Where the first phone number, e-mail or counted quantity in ``segment`` starts (its
    length if none)."""
    starts = [len(segment)]
    starts += [start for _, start, _ in _phones(segment, region)] if _DIGIT.search(segment) else []
    at = segment.find("@")
    if at >= 0:
        starts.append(segment.rfind(" ", 0, at) + 1)
    for units in words.units.values():
        for pattern in _unit_patterns(units):
            match = pattern.search(segment)
            if match is not None:
                starts.append(match.start())
    return min(starts)


@functools.cache
def _opening_label_pattern(labels: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    names = _alternation(tuple(label for label, _ in labels))
    return re.compile(rf"^\W*({names}){_WORD_EDGE_R}\s*[:：=]?\s*(?=\S)", re.I)


def _labels(flow: Flow, steps: Mapping[str, Step]) -> tuple[tuple[str, str], ...]:
    pairs: dict[str, str] = {}
    for name, target in steps.items():
        for words in target.labels.values():
            for word in words:
                pairs.setdefault(word.lower().replace("ё", "е"), name)
    return tuple(sorted(pairs.items()))


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        for index in range(start, end):
            if chars[index] != "\n":
                chars[index] = " "
    return "".join(chars)


def _phones(text: str, region: str) -> list[tuple[str, int, int]]:
    """Valid phone numbers in ``text`` with their spans: runs of digits and the separators
    people type in numbers ("0770 11 22 33", "+996 (555) 123-456"), each read by
    ``phonenumbers`` (much cheaper than its ``PhoneNumberMatcher`` on every message). A run
    that is no number as a whole may hold one after a house number ("Манаса 40 0555123456"):
    its space-separated parts are tried too, the longest first."""
    found: list[tuple[str, int, int]] = []
    for run in _DIGIT_RUN.finditer(text):
        if len(_DIGIT.findall(run.group())) < 9:
            continue
        parts = [
            (m.start() + run.start(), m.end() + run.start()) for m in _PART.finditer(run.group())
        ]
        spans = [
            (parts[i][0], parts[j][1])
            for size in range(len(parts), 0, -1)
            for i in range(len(parts) - size + 1)
            for j in (i + size - 1,)
        ]
        for start, end in spans:
            piece = text[start:end]
            if not 9 <= len(_DIGIT.findall(piece)) <= 15:
                continue
            e164 = _phone_number(piece, region)
            if e164 is not None:
                found.append((e164, start, end))
                break
    return found


_PART = re.compile(r"\S+")
_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s\-().]*\d")


@functools.lru_cache(maxsize=4096)
def _phone_number(run: str, region: str) -> str | None:
    digits = re.sub(r"\D", "", run)
    # A leading + means the customer gave the country code: never read it as local.
    candidates = ["+" + digits] if run.startswith("+") else [digits, "+" + digits]
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        national = phonenumbers.national_significant_number(number)
        prefix = digits[: len(digits) - len(national)]
        code = str(number.country_code)
        # Every digit typed belongs to the number: "0770 11 22 33 4" is no phone plus a 4.
        if (
            phonenumbers.is_valid_number(number)
            and digits.endswith(national)
            and prefix in ("", "0", code, "00" + code)
        ):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


@functools.cache
def _unit_hint(units: tuple[str, ...]) -> re.Pattern[str]:
    """Any of ``units`` anywhere: the cheap check before the patterns with every number word."""
    return re.compile(_alternation(units), re.I)


@functools.cache
def _unit_patterns(units: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    names = _alternation(units)
    before = re.compile(
        rf"{_WORD_EDGE_L}({_COUNT})\s*({names}){_WORD_EDGE_R}",
        re.I,
    )
    after = re.compile(rf"{_WORD_EDGE_L}({names})\s*[:\-]?\s*(\d+){_WORD_EDGE_R}", re.I)
    return before, after


_NOT_BUT = re.compile(
    r"(?:^|(?<=[\s,.!]))(?:не|not)\s+(.{1,40}?)\s*,?\s+(?:а|but|но)\s+(.+?)\s*[.!]*$", re.I
)


def read(
    flow: Flow,
    current: Step,
    data: Mapping[str, Any],
    text: str,
    *,
    region: str,
    language: str,
    first: bool = False,
    media: bool = False,
    known: Mapping[str, Any] | None = None,
) -> Reading:
    """Every detail ``text`` gives, read at the question ``current`` with the answers ``data``.

    ``first``: the message opens a dialog (a remainder is an address only if it looks like
    one); ``media``: it came with a photo or a file, so its text is a caption: not an address
    (a courier must not drive to "вот так выглядит наш подъезд"), though typed details count;
    ``known``: the details of the customer's last order ("номер прежний", "туда же").
    """
    words = _flow_words(flow)
    steps, labels = words.steps, words.labels
    spans: list[tuple[int, int]] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    change: str | None = None
    ambiguous: set[str] = set()

    def take(name: str, value: Any, source: str) -> None:
        if name in values and values[name] != value:
            ambiguous.add(name)
        values[name] = value
        sources[name] = source

    said = set(phrase(text).split())
    # 1. Labelled values and corrections that name their field.
    if labels and (said & words.label_words or (":" in text and words.label_words)):
        patterns: tuple[re.Pattern[str], ...] = _label_patterns(labels)
        lookup = dict(labels)
        at_summary = current.field is None and current.returns_to is None
        if at_summary:
            # At the summary "адрес Чуй 5" changes the address: a label opening the message.
            patterns = (*patterns, _opening_label_pattern(labels))
        starts = sorted(
            (m.start(), m.end(), lookup[m.group(1).lower().replace("ё", "е")])
            for pattern in patterns
            for m in pattern.finditer(text)
        )
        # Overlapping matches of the three patterns: the earliest, longest one.
        chosen: list[tuple[int, int, str]] = []
        for start, end, name in starts:
            if chosen and start < chosen[-1][1]:
                if end > chosen[-1][1] and start == chosen[-1][0]:
                    chosen[-1] = (start, end, name)
                continue
            chosen.append((start, end, name))
        for index, (start, end, name) in enumerate(chosen):
            stop = chosen[index + 1][0] if index + 1 < len(chosen) else len(text)
            newline = text.find("\n", end)
            if 0 <= newline < stop and newline > end:
                stop = newline
            target = steps[name]
            if target.validator in FREE_TEXT:
                # "адрес Чуй 5 и 4 бутыли": the address ends where another detail begins.
                stop = end + _detail_start(text[end:stop], words, region)
            segment = text[end:stop].strip(" \t,;.—–-")
            if not segment:
                change = name
                spans.append((start, stop))
                continue
            if target.validator in FREE_TEXT:
                segment = clean_rest(segment)
            ok, value = _validate(target, segment, region, language, flow)
            if ok:
                take(name, value, segment)
                spans.append((start, stop))
            elif name == current.field:
                sources[name] = segment  # the step re-asks with the reason
                spans.append((start, stop))

    # 1b. "номер прежний", "туда же": a detail as in the last order.
    if known:
        same_place = _SAME_PLACE.search(text)
        address_fields = words.by_validator.get("address", [])
        if same_place is not None and address_fields and address_fields[0] in known:
            value = known[address_fields[0]]
            take(address_fields[0], value, str(value))
            spans.append(same_place.span())
        for same in _SAME.finditer(text):
            spans.append(same.span())
            named = [
                name
                for label, name in labels
                if name in known
                and re.search(rf"(?i){_WORD_EDGE_L}{re.escape(label)}{_WORD_EDGE_R}", text)
            ]
            if not named and current.field is not None and current.field in known:
                named = [current.field]
            for name in named:
                take(name, known[name], str(known[name]))
            for label, _name in labels:
                for hit in re.finditer(
                    rf"(?i){_WORD_EDGE_L}{re.escape(label)}{_WORD_EDGE_R}", text
                ):
                    spans.append(hit.span())

    masked = _mask(text, spans)
    # 2. Phone numbers anywhere (never part of an address, even in a flow that has no phone).
    phone_fields = words.by_validator.get("phone", [])
    if len(_DIGIT.findall(masked)) >= 6:
        phones = _phones(masked, region)
        distinct = {e164 for e164, _, _ in phones}
        if len(distinct) == 1 and phone_fields and phone_fields[0] not in values:
            take(phone_fields[0], distinct.pop(), masked[phones[0][1] : phones[0][2]])
        for _, start, end in phones:
            spans.append((start, end))
        if len(distinct) > 1 and phone_fields:
            ambiguous.add(phone_fields[0])
        masked = _mask(text, spans)
    # 3. E-mail addresses (likewise never part of an address).
    email_fields = words.by_validator.get("email", [])
    if "@" in masked:
        for token in re.finditer(r"\S*@\S*", masked):
            checked = parse_email(token.group())
            if not isinstance(checked, Invalid) and email_fields and email_fields[0] not in values:
                take(email_fields[0], checked.value, token.group())
            spans.append((token.start(), token.end()))
        masked = _mask(text, spans)
    # 4. Quantities with their unit words.
    for name, units in words.units.items():
        target = steps[name]
        if name in values:
            continue
        if _unit_hint(units).search(text) is None:
            continue
        for pattern in _unit_patterns(units):
            for match in pattern.finditer(masked):
                source = match.group()
                if target is current:
                    take(name, None, source)
                else:
                    # "100 бутылей" at another question is not kept (its own question asks
                    # again and says why), but it is no part of an address either.
                    ok, value = _validate(target, source, region, language, flow)
                    if ok:
                        take(name, value, source)
                spans.append((match.start(), match.end()))
        masked = _mask(text, spans)
    # 5. "не 3, а 4", "not Manas but Chui 5": the field whose value holds the first part.
    not_but = _NOT_BUT.search(masked) if said & {"не", "not"} else None
    if not_but is not None:
        old, new = not_but.group(1).strip(), not_but.group(2).strip()
        holders = [
            name
            for name in steps
            if name in data
            and data[name] is not None
            and phrase(old)
            and f" {phrase(old)} " in f" {phrase(str(data[name]))} "
        ]
        if len(holders) == 1:
            name = holders[0]
            target = steps[name]
            replaced = new
            if target.validator in FREE_TEXT:
                start = str(data[name]).lower().find(old.lower())
                if start >= 0:
                    value = str(data[name])
                    replaced = value[:start] + new + value[start + len(old) :]
            ok, value = _validate(target, replaced, region, language, flow)
            if ok:
                take(name, value, replaced)
                spans.append(not_but.span())
                masked = _mask(text, spans)

    rest = clean_rest(masked)
    answer: str | None = None
    for name in ambiguous:
        values.pop(name, None)
        sources.pop(name, None)
    if current.field is not None and current.field in sources:
        answer = sources[current.field]
        values.pop(current.field, None)
    elif (
        current.validator in FREE_TEXT
        and not (media and current.validator == "address")
        and current.field not in ambiguous
    ):
        if rest and (not first or values or looks_like_address(rest)):
            answer = rest
    elif current.validator in _COUNTED and re.search(rf"(?i){_WORD_EDGE_L}(?:{_NUMBER})", rest):
        answer = rest
    address_fields = words.by_validator.get("address", [])
    if (
        answer is None
        and values
        and not media
        and address_fields
        and address_fields[0] not in data
        and address_fields[0] not in values
        and rest
        and looks_like_address(rest)
    ):
        ok, value = _validate(steps[address_fields[0]], rest, region, language, flow)
        if ok:
            values[address_fields[0]] = value
    counted = [n for n, s in steps.items() if s.validator in _COUNTED and n in data]
    if (
        current.field is None
        and current.returns_to is None
        and len(counted) == 1
        and counted[0] not in values
        and re.fullmatch(rf"(?i)(?:{_NUMBER})(?:[\s-]+(?:{_NUMBER}))?", rest)
    ):
        ok, value = _validate(steps[counted[0]], rest, region, language, flow)
        if ok:
            values[counted[0]] = value
    return Reading(values=values, answer=answer, change=change, rest=rest)
