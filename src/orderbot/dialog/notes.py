"""What the bot says about how it read a message: the details it took or changed, how to
change one at a summary without an edit menu, a question
it cannot answer, a button from an older message, a photo where text was wanted, a language
switch, and when a shop that is closed now can deliver.

Each text is an optional global text of the flow (``texts:`` in the YAML); these are the
defaults, in the languages the shipped flows speak.
"""

from __future__ import annotations

from collections.abc import Mapping

from orderbot.dialog.flow import Flow, Texts
from orderbot.dialog.wording import render

__all__ = ["DEFAULT_TEXTS", "note"]

DEFAULT_TEXTS: Mapping[str, Texts] = {
    "reminder": {
        "ru": "Вы не закончили заказ — продолжим с того же места?",
        "en": "You haven't finished your order. Shall we go on where we stopped?",
        "ky": "Буйрутмаңыз бүтө элек — токтогон жерден уланталыбы?",
    },
    "details_noted": {
        "ru": "Записал: {details}.",
        "en": "Noted: {details}.",
        "ky": "Жазып алдым: {details}.",
    },
    "details_changed": {
        "ru": "Исправил: {details}.",
        "en": "Changed: {details}.",
        "ky": "Оңдодум: {details}.",
    },
    "change_field": {
        "ru": "Хорошо, изменим: {field}.",
        "en": "All right, let's change the {field}.",
        "ky": "Макул, өзгөртөбүз: {field}.",
    },
    "edit_hint": {
        "ru": "Что изменить? Напишите, например: {fields} — с новым значением.",
        "en": "What shall we change? Write e.g. {fields} with the new value.",
        "ky": "Эмнени өзгөртөбүз? Мисалы, жаңы маани менен жазыңыз: {fields}.",
    },
    "question_unknown": {
        "ru": "Хороший вопрос — передал его оператору, он ответит вам здесь. А пока продолжим.",
        "en": "Good question: I've passed it to an operator, who will answer you here. "
        "Meanwhile, let's go on.",
        "ky": "Сурооңузду операторго жөнөттүм, ал ушул жерден жооп берет. Азырынча уланталы.",
    },
    "stale_button": {
        "ru": "Эта кнопка — от предыдущего сообщения.",
        "en": "That button belongs to an earlier message.",
        "ky": "Бул баскыч мурунку билдирүүдөн.",
    },
    "media_caption": {
        "ru": "Получил вложение, но этот ответ нужен текстом.",
        "en": "I got the attachment, but this answer is needed as text.",
        "ky": "Файлды алдым, бирок бул жоопту текст менен жазыңыз.",
    },
    "language_switched": {
        "ru": "Хорошо, продолжим по-русски.",
        "en": "Sure, let's continue in English.",
        "ky": "Макул, кыргызча улантабыз.",
    },
    "closed_note": {
        "ru": "Сейчас мы не работаем, поэтому доставим {when}.",
        "en": "We are closed right now, so we will deliver {when}.",
        "ky": "Азыр иштебей жатабыз, ошондуктан {when} жеткиребиз.",
    },
}


def note(flow: Flow, key: str, language: str, values: Mapping[str, str] | None = None) -> str:
    """The flow's text ``key`` (or the default) in ``language``, with ``values`` and vars."""
    texts = flow.texts.get(key) or DEFAULT_TEXTS[key]
    language = flow.language(language)
    template = texts.get(language) or texts.get("en") or next(iter(texts.values()))
    return render(template, {**flow.vars, **(values or {})})
