"""The dialog engine: one pure function from (flow, state, message) to (state, replies, effects).

No I/O happens here. The worker loads the state, calls :func:`step`, stores the order and the
replies that come back, and saves the new state; everything about the conversation itself
(commands, timeouts, languages, re-asks, Back and Cancel, the edit menu, the list of model files)
is decided here, from the flow's data.

Files are I/O, so they never reach this module as bytes: the worker fetches, checks and stores
what the customer attached *before* the step (see :mod:`orderbot.files.receiver`) and passes
each result as a :class:`ReceivedFile` (stored, or refused with a reason); the engine only keeps
the list.

The conversation is decided in these modules: this one reads what a message is (a command, a
button, an answer) and routes it; :mod:`~orderbot.dialog.conversation` handles a message
written as people write (every detail read by :mod:`~orderbot.dialog.understanding`,
corrections, questions, the wrong keyboard layout) and hands the current question's answer to
:mod:`~orderbot.dialog.handlers`, which acts on each kind;
:mod:`~orderbot.dialog.navigation` knows where the answers lead; :mod:`~orderbot.dialog.rendering`
words the replies. The values going in and out are in :mod:`~orderbot.dialog.models`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from orderbot.dialog import browse
from orderbot.dialog.conversation import repeat_offer, respond
from orderbot.dialog.flow import Flow
from orderbot.dialog.handlers import (
    begin_dialog,
    cancel_dialog,
    dialog_ended,
    numbered_listing,
    pick_item,
    receive_files,
    show_catalog,
)
from orderbot.dialog.layout import other_layout
from orderbot.dialog.models import (
    DialogOptions,
    DialogState,
    Effect,
    ReceivedFile,
    Reply,
    StepResult,
)
from orderbot.dialog.navigation import back_target, prune, step_buttons, summaries
from orderbot.dialog.notes import note
from orderbot.dialog.rendering import render_prompt, with_prompt
from orderbot.dialog.understanding import is_question, known_details, read, wants_repeat
from orderbot.dialog.wording import phrase as _phrase
from orderbot.dialog.wording import phrases as _phrases
from orderbot.messages import Attachment

__all__ = ["detect_language", "error_reply", "file_room", "question", "step", "wants_files"]


_ERROR_TEXTS = {
    "ru": "Извините, что-то пошло не так. Пожалуйста, повторите последнее сообщение.",
    "en": "Sorry, something went wrong. Please repeat your last message.",
    "ky": "Кечиресиз, бир нерсе туура эмес болду. Акыркы билдирүүңүздү кайталаңызчы.",
}


def error_reply(language: str) -> Reply:
    """The apology the worker sends when :func:`step` itself raised."""
    return Reply(_ERROR_TEXTS.get(language, _ERROR_TEXTS["ru"]))


_CYRILLIC = re.compile("[\u0400-\u04ff]")
_LATIN = re.compile("[A-Za-z]")
_SLASH_COMMAND = re.compile(r"/[A-Za-z_]\w*(?:@\w+)?")
_KYRGYZ_LETTERS = re.compile("[ңөүҢӨҮ]")
# Kyrgyz words written without its own letters; "салам" is said in Russian too, so not here.
_KYRGYZ_WORDS = frozenset(
    {"саламатсызбы", "ооба", "рахмат", "керек", "канча", "жок", "макул", "барбы", "кандайсыз",
     "жакшы", "бизге", "мага", "суу", "бар", "эки", "алты", "жети", "сегиз", "тогуз", "отуз",
     "кырк", "жыйырма", "кайда", "качан", "эмне", "кыргызча"}
)  # fmt: skip


def detect_language(text: str, default: str) -> str:
    """``ky`` for a message with Kyrgyz letters (ң, ө, ү) or words, ``ru`` for one mostly in
    Cyrillic, ``en`` for Latin, else ``default``.

    Slash commands are ignored: "/start" says nothing about the customer's language.
    """
    letters = _SLASH_COMMAND.sub(" ", text)
    cyrillic = len(_CYRILLIC.findall(letters))
    latin = len(_LATIN.findall(letters))
    if cyrillic and cyrillic >= latin:
        if _KYRGYZ_LETTERS.search(letters) or set(_phrase(letters).split()) & _KYRGYZ_WORDS:
            return "ky"
        return "ru"
    if latin:
        return "en"
    return default


_COMMANDS = {
    "/start": "start",
    "/restart": "start",
    "/cancel": "cancel",
    "/stop": "cancel",
    "/help": "help",
    "/services": "services",
    "/catalog": "services",
    "/order": "order",
    "/ru": "language:ru",
    "/en": "language:en",
    "/ky": "language:ky",
    "/kg": "language:ky",
}
# Commands typed without the slash, as the whole message.
_COMMAND_WORDS = {
    "start": "start",
    "старт": "start",
    "help": "help",
    "помощь": "help",
    "справка": "help",
    "жардам": "help",
    "menu": "services",
    "меню": "services",
    "english": "language:en",
    "in english": "language:en",
    "по английски": "language:en",
    "русский": "language:ru",
    "по русски": "language:ru",
    "на русском": "language:ru",
    "in russian": "language:ru",
    "кыргызча": "language:ky",
    "кыргыз тилинде": "language:ky",
    "на кыргызском": "language:ky",
    "по кыргызски": "language:ky",
    "in kyrgyz": "language:ky",
}
_DIGIT = re.compile(r"\d")
_BUTTON_NUMBER = re.compile(r"\s*(\d{1,2})\s*[.)]?\s*")


def _command(flow: Flow, text: str) -> str | None:
    """``start``, ``cancel``, ``help``, ``services``, ``order``, ``unknown`` (another slash
    command) or ``None``."""
    stripped = text.strip()
    if stripped.startswith("/"):
        # "/start@shop_bot" in Telegram groups, "/start promo" from deep links.
        head = stripped.split(maxsplit=1)[0].split("@", 1)[0].lower()
        return _COMMANDS.get(head, "unknown")
    # Cancel and restart words count only as the whole message: an address or a name may
    # contain them, and eating a customer's answer is worse than asking once more.
    phrase = _phrase(stripped)
    if not phrase:
        return None
    found = _command_word(flow, phrase)
    if found is None and len(phrase) <= 30 and _DIGIT.search(phrase) is None:
        # "jnvtyf": "отмена" typed with the Latin layout on.
        swapped = other_layout(stripped)
        if swapped is not None:
            found = _command_word(flow, _phrase(swapped))
    return found


def _command_word(flow: Flow, phrase: str) -> str | None:
    if phrase in _phrases(flow.cancel_words):
        return "cancel"
    if phrase in _phrases(flow.restart_words):
        return "start"
    if phrase in _phrases(browse.SERVICES_WORDS):
        return "services"
    return _COMMAND_WORDS.get(phrase)


def wants_files(flow: Flow, state: DialogState | None) -> bool:
    """Whether the dialog waits for model files, so the worker should fetch attachments first
    (and not download a photo sent at the address step)."""
    if state is None or state.step not in flow.steps:
        return False
    return flow.steps[state.step].validator == "model_files"


def file_room(flow: Flow, state: DialogState | None) -> int:
    """How many more model files the current step takes (0 when it wants none): the worker
    downloads no more than this from one message, and the rest are refused as ``too_many``."""
    if state is None or not wants_files(flow, state):
        return 0
    current = flow.steps[state.step]
    stored = state.data.get(current.field or "") or []
    taken = len(stored) if isinstance(stored, list) else 0
    return max(0, int(current.params.get("max_files", 10)) - taken)


def step(
    flow: Flow,
    state: DialogState | None,
    text: str,
    now: float,
    *,
    options: DialogOptions,
    attachments: Sequence[Attachment | ReceivedFile] = (),
    buttons: bool = True,
    language_hint: str | None = None,
    known: Mapping[str, Any] | None = None,
) -> StepResult:
    """Handle one customer message.

    ``state`` is what the previous call returned (``None`` for a customer without a dialog),
    ``now`` is the message time in unix seconds, ``attachments`` what the message carried: a
    :class:`ReceivedFile` once the worker fetched and checked it, a bare ``Attachment`` when
    nobody did (a file step then says it could not get the file). ``buttons``: whether the
    channel shows buttons (Telegram) or numbered text (Chat2Desk); only the catalog listing
    differs (:mod:`orderbot.dialog.browse`). ``language_hint``: the language the customer's
    app is set to (Telegram's ``language_code``), used for a new dialog when the text itself
    says nothing (a bare "/start"). ``known``: the data of the customer's last order, which
    the worker reads for a message that begins a dialog; the dialog offers it again ("как
    обычно") and keeps what it may reuse in its state. Pure: the same arguments give the same
    result.
    """
    effects: list[Effect] = []
    if state is not None and (
        state.updated_at + options.idle_timeout < now
        # A state from an older version of the flow, or one that should have ended: start over.
        or state.step not in flow.steps
        or flow.steps[state.step].end is not None
        or (state.return_to is not None and state.return_to not in flow.steps)
    ):
        effects.append(dialog_ended(state, "abandoned", now))
        state = None
    command = _command(flow, text)
    # A location pin is no file: at a file step it is read like a message without text.
    files = [a for a in attachments if not (isinstance(a, Attachment) and a.kind == "location")]

    if state is None:
        wanted = options.default_language
        if options.detect_language:
            hint = (language_hint or "").split("-")[0].lower()
            wanted = detect_language(
                text, hint if hint in flow.spoken else options.default_language
            )
        if command is not None and command.startswith("language:"):
            wanted = command.split(":", 1)[1]
        language = flow.language(wanted if wanted in flow.spoken else options.default_language)
        if command == "cancel":
            return StepResult(None, (Reply(flow.text("cancelled", language)),), tuple(effects))
        if command == "services":
            return show_catalog(flow, None, language, 0, now, buttons, effects)
        # A button of an old listing: an order button, "Next ›".
        action = browse.read(flow, text, None, numbers=False)
        if isinstance(action, browse.ShowPage):
            return show_catalog(flow, None, language, action.page, now, buttons, effects)
        if isinstance(action, browse.PickItem):
            return pick_item(flow, None, language, action.item, now, options, effects)
        new_state, replies = begin_dialog(flow, language, now)
        details = known_details(flow, known)
        if details:
            new_state = dataclasses.replace(new_state, known=details)
        if (
            command is None
            and text.strip()
            and _opens_with_details(flow, new_state, text, options, media=bool(files))
        ):
            # The first message already says something: read it, after the greeting.
            first = flow.steps[flow.start]
            result = respond(flow, first, new_state, language, text, options, effects, first=True)
            return StepResult(result.state, (replies[0], *result.replies), result.effects)
        offer = repeat_offer(flow, details, language)
        if offer is not None:
            replies = (replies[0], offer, *replies[1:])
        return StepResult(new_state, replies, tuple(effects))

    language = flow.language(state.language)
    if command == "start" or (command == "order" and state.restart_asked):
        # The /start itself is the first message of the new dialog, not the last of the old one.
        effects.append(dialog_ended(state, "abandoned", now))
        new_state, replies = begin_dialog(flow, language, now)
        new_state = dataclasses.replace(new_state, known=state.known)
        return StepResult(new_state, replies, tuple(effects))
    if command == "order" and not state.data:
        # Nothing collected yet (say, only the catalog was shown): the same dialog, from its
        # first question, without asking whether to drop it.
        new_state, replies = begin_dialog(flow, language, now)
        new_state = dataclasses.replace(
            new_state, started_at=state.started_at, message_count=state.message_count + 1
        )
        return StepResult(new_state, replies, tuple(effects))

    current = flow.steps[state.step]
    # What the last reply offered besides the question (a catalog page, "send /order again")
    # holds for this message only.
    advanced = dataclasses.replace(
        state,
        updated_at=now,
        message_count=state.message_count + 1,
        catalog_page=None,
        restart_asked=False,
    )
    if command == "cancel":
        return cancel_dialog(flow, advanced, language, effects, now)
    if command in ("help", "unknown"):
        before = flow.text("help" if command == "help" else "unknown_command", language)
        if command == "help" and current.help:
            before = f"{before}\n\n{current.help[language]}"
        reply = with_prompt(flow, current, language, state.data, before, state.return_to)
        return StepResult(advanced, (reply,), tuple(effects))
    if command == "order":
        before = browse.browse_text(flow, "order_in_progress", language)
        reply = with_prompt(flow, current, language, state.data, before, state.return_to)
        asked = dataclasses.replace(advanced, restart_asked=True)
        return StepResult(asked, (reply,), tuple(effects))
    if command == "services":
        return show_catalog(flow, advanced, language, 0, now, buttons, effects)
    if command is not None and command.startswith("language:"):
        switched = dataclasses.replace(advanced, language=flow.language(command.split(":")[1]))
        before = note(flow, "language_switched", switched.language)
        reply = with_prompt(flow, current, switched.language, state.data, before, state.return_to)
        return StepResult(switched, (reply,), tuple(effects))
    if files and current.validator == "model_files":
        return receive_files(flow, current, advanced, language, files, effects)
    if not text.strip():
        reply = with_prompt(
            flow, current, language, state.data, flow.text("empty", language), state.return_to
        )
        return StepResult(advanced, (reply,), tuple(effects))
    numbers = numbered_listing(flow, current, language, state.data, state.return_to, buttons)
    action = browse.read(flow, text, state.catalog_page, numbers=numbers)
    if isinstance(action, browse.ShowPage):
        return show_catalog(flow, advanced, language, action.page, now, buttons, effects)
    if isinstance(action, browse.PickItem):
        return pick_item(flow, advanced, language, action.item, now, options, effects)

    shown = step_buttons(flow, current, language, state.data, state.return_to)
    number = _BUTTON_NUMBER.fullmatch(text)
    # With numeric labels ("1", "2", "5") a typed number is the label itself, not its position.
    numeric_labels = any(label.strip().isdigit() for label in shown)
    if shown and number and not numeric_labels and 1 <= int(number.group(1)) <= len(shown):
        # Channels without buttons show them numbered; the number stands for the label.
        text = shown[int(number.group(1)) - 1]
    phrase = _phrase(text)
    if flow.cancel_label and phrase == _phrase(flow.cancel_label[language]):
        return cancel_dialog(flow, advanced, language, effects, now)
    back = back_target(flow, current, state.data, state.return_to)
    back_phrases = {_phrase(label) for label in flow.back_label.values()}
    back_phrases |= {_phrase(word) for word in flow.back_words}
    if back is not None and phrase in back_phrases:
        data = prune(flow, state.data) if back in summaries(flow) else state.data
        moved = dataclasses.replace(advanced, step=back, data=data, return_to=None)
        reply = render_prompt(flow, flow.steps[back], language, data)
        return StepResult(moved, (reply,), tuple(effects))
    return respond(flow, current, advanced, language, text, options, effects, media=bool(files))


def _opens_with_details(
    flow: Flow, state: DialogState, text: str, options: DialogOptions, *, media: bool
) -> bool:
    """Whether the first message of a dialog is more than a greeting: a question, or details
    (a phone, a quantity with its unit, an address that looks like one)."""
    if media:
        return False
    if is_question(text) or (state.known and wants_repeat(text)):
        return True
    first = flow.steps[flow.start]
    if first.validator in (None, "model_files"):
        return False
    reading = read(
        flow,
        first,
        state.data,
        text,
        region=options.phone_region,
        language=state.language,
        first=True,
        known=state.known,
    )
    return bool(reading.values) or reading.answer is not None


def question(
    flow: Flow, state: DialogState | None, now: float, *, options: DialogOptions
) -> Reply | None:
    """The current step's question as :func:`step` would ask it, to re-ask after something
    answered outside the dialog (order tracking, an operator handing back). None when there is
    no dialog to resume: none at all, idle past the timeout, or one the flow no longer has."""
    if (
        state is None
        or state.updated_at + options.idle_timeout < now
        or state.step not in flow.steps
        or flow.steps[state.step].end is not None
        or (state.return_to is not None and state.return_to not in flow.steps)
    ):
        return None
    current = flow.steps[state.step]
    return render_prompt(flow, current, flow.language(state.language), state.data, state.return_to)
