"""Answers picked from a fixed set: yes or no, an item of a catalog, a command of the model
files step. Typing a button's label counts as pressing it.

Separate from the free-form readers (:mod:`orderbot.dialog.validators.contacts`,
:mod:`orderbot.dialog.validators.quantities`): these map a message onto one of a few known
values, which flows may branch on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from orderbot.dialog.validators.base import (
    EMOJI_NOISE,
    Invalid,
    Valid,
    ValidationResult,
    fold,
    split_words,
)
from orderbot.dialog.wording import close_word

__all__ = [
    "FILES_CONTINUE",
    "FILES_REMOVE_LAST",
    "FILE_REASONS",
    "CatalogItem",
    "parse_catalog_choice",
    "parse_files_command",
    "parse_yes_no",
]


# --------------------------------------------------------------------------------------------
# yes / no

_YES_PHRASES = {
    "да", "ага", "угу", "конечно", "верно", "все верно", "правильно", "все правильно", "точно",
    "подтверждаю", "подтвердить", "ок", "окей", "хорошо", "давай", "давайте", "оформляйте",
    "yes", "yep", "yeah", "yup", "sure", "ok", "okay", "confirm", "confirmed", "correct",
    "right", "all right", "alright", "go ahead", "of course",
    "ооба", "макул", "туура", "болот", "ооба туура", "баары туура", "жарайт", "макулмун",
    "бекитем", "ырастайм", "ооба бекитем",
    "da", "ага да", "yes please", "sure thing",
    "канешно", "канешна", "конешна", "конешно", "конечно да",
}  # fmt: skip
_NO_PHRASES = {
    "нет", "неа", "не надо", "не нужно", "неправильно", "не правильно", "неверно", "не верно",
    "не то", "не подтверждаю", "no", "nope", "nah", "no way", "not correct", "incorrect",
    "wrong", "not right", "жок", "туура эмес", "керек эмес", "жок рахмат", "net",
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
    "баары", "пжл", "пж", "плиз", "pls", "plz",
}  # fmt: skip
_YES_WORDS = frozenset(p for p in _YES_PHRASES if " " not in p)
_NO_WORDS = frozenset(p for p in _NO_PHRASES if " " not in p)
_STRETCHED = re.compile(r"([^\W\d_])\1+")
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
    bare = EMOJI_NOISE.sub("", text).strip()
    for index, label in enumerate(buttons[:2]):
        if fold(label) == fold(bare):
            return Valid(index == 0)
    symbols = {ch for ch in bare if not ch.isspace()}
    if symbols and symbols <= _YES_SYMBOLS:
        return Valid(True)
    if symbols and symbols <= _NO_SYMBOLS:
        return Valid(False)
    words = [_known_word(word) for word in split_words(bare.replace("’", "'"))]
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


def _known_word(word: str) -> str:
    """A stretched or mistyped yes/no word as meant ("даааа", "нееет", "конешно"), else as is."""
    if word in _YES_WORDS or word in _NO_WORDS or word in _FILLER:
        return word
    for squeezed in (_STRETCHED.sub(r"\1", word), _STRETCHED.sub(r"\1\1", word)):
        if squeezed in _YES_WORDS or squeezed in _NO_WORDS:
            return squeezed
    return close_word(word, _YES_WORDS | _NO_WORDS) or word


# --------------------------------------------------------------------------------------------
# catalog choice


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One choice: ``id`` is stored, ``names`` (any language) are what a customer may type."""

    id: str
    names: tuple[str, ...]


def parse_catalog_choice(text: str, items: Sequence[CatalogItem]) -> ValidationResult:
    """Pick an item by one of its names or by its number (1..n, in catalog order), ignoring
    case and surrounding punctuation. Names win: with items named "15 %" and "30 %", "30" is
    the second item, not the thirtieth. Returns the item id. Reason: ``unknown_choice``."""
    answer = " ".join(split_words(text))
    for item in items:
        if any(" ".join(split_words(name)) == answer for name in (item.id, *item.names)):
            return Valid(item.id)
    if answer.isdigit():
        index = int(answer)
        if 1 <= index <= len(items):
            return Valid(items[index - 1].id)
    # One mistyped letter in a long name ("подтвердаю") still picks it, if only one is that close.
    names = {
        " ".join(split_words(name)): item.id for item in items for name in (item.id, *item.names)
    }
    near = close_word(answer, frozenset(names)) if " " not in answer else None
    if near is not None:
        return Valid(names[near])
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
        "not_checked",  # the content could not be judged within its time limit
    }
)


def parse_files_command(text: str, *, buttons: Sequence[str] = ()) -> ValidationResult:
    """``continue`` or ``remove_last`` from a button label (``[continue, remove last]``) or the
    usual words for them. Reason: ``file_expected``."""
    answer = " ".join(split_words(text.replace("’", "'")))
    commands = (FILES_CONTINUE, FILES_REMOVE_LAST)
    for command, label in zip(commands, buttons[:2], strict=False):
        if answer == " ".join(split_words(label)):
            return Valid(command)
    if answer in _CONTINUE_PHRASES:
        return Valid(FILES_CONTINUE)
    if answer in _REMOVE_PHRASES:
        return Valid(FILES_REMOVE_LAST)
    return Invalid("file_expected")
