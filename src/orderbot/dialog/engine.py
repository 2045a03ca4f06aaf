"""The dialog engine: one pure function from (flow, state, message) to (state, replies, effects).

No I/O happens here. The worker loads the state, calls :func:`step`, stores the order and the
replies that come back, and saves the new state; everything about the conversation itself
(commands, timeouts, languages, re-asks) is decided here, from the flow's data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from orderbot.dialog.flow import Flow, Step
from orderbot.dialog.validators import VALIDATORS, Invalid, ValidationContext
from orderbot.errors import FlowError

__all__ = [
    "CreateOrder",
    "DialogEnded",
    "DialogOptions",
    "DialogState",
    "Effect",
    "Reply",
    "StepResult",
    "detect_language",
    "error_reply",
    "render_buttons_as_text",
    "step",
]


@dataclass(frozen=True, slots=True)
class DialogState:
    """Where one customer's dialog stands. ``data`` holds JSON-serialisable values only."""

    step: str
    language: str
    data: dict[str, Any]
    started_at: float
    updated_at: float
    message_count: int

    def to_json(self) -> bytes:
        """The stored form of the state."""
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> DialogState:
        """Read a state written by :meth:`to_json`; ``ValueError`` if it is not one."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"dialog state is not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise ValueError("dialog state must be a JSON object")
        try:
            state = cls(
                step=obj["step"],
                language=obj["language"],
                data=obj["data"],
                started_at=float(obj["started_at"]),
                updated_at=float(obj["updated_at"]),
                message_count=obj["message_count"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"dialog state lacks a field: {exc}") from exc
        if not (
            isinstance(state.step, str)
            and isinstance(state.language, str)
            and isinstance(state.data, dict)
            and isinstance(state.message_count, int)
        ):
            raise ValueError("dialog state has a field of the wrong type")
        return state


@dataclass(frozen=True, slots=True)
class Reply:
    """One message to the customer; ``buttons`` are choice labels, in order."""

    text: str
    buttons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CreateOrder:
    """Effect: store an order. ``data`` is everything collected, for flows beyond water."""

    phone: str | None
    address: str | None
    quantity: int | None
    language: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DialogEnded:
    """Effect: a dialog ended; a row for the dialog outcomes table."""

    outcome: Literal["completed", "cancelled", "abandoned"]
    last_step: str
    message_count: int
    started_at: float
    ended_at: float


Effect = CreateOrder | DialogEnded


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one message did: the new state (``None``: forget it), replies, effects."""

    state: DialogState | None
    replies: tuple[Reply, ...]
    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class DialogOptions:
    """Settings that shape dialogs; the worker builds them from ``Settings`` once."""

    default_language: str = "ru"
    detect_language: bool = True
    phone_region: str = "KG"
    idle_timeout: float = 86400.0


_ERROR_TEXTS = {
    "ru": "Извините, что-то пошло не так. Пожалуйста, повторите последнее сообщение.",
    "en": "Sorry, something went wrong. Please repeat your last message.",
}


def error_reply(language: str) -> Reply:
    """The apology the worker sends when :func:`step` itself raised."""
    return Reply(_ERROR_TEXTS.get(language, _ERROR_TEXTS["ru"]))


def render_buttons_as_text(reply: Reply) -> str:
    """The reply for channels without buttons: its text, then the labels numbered.

    The engine accepts the bare number ("2") as the label, so customers can answer with it.
    """
    if not reply.buttons:
        return reply.text
    lines = [f"{index}. {label}" for index, label in enumerate(reply.buttons, start=1)]
    return reply.text + "\n\n" + "\n".join(lines)


_CYRILLIC = re.compile("[\u0400-\u04ff]")
_LATIN = re.compile("[A-Za-z]")
_SLASH_COMMAND = re.compile(r"/[A-Za-z_]\w*(?:@\w+)?")


def detect_language(text: str, default: str) -> str:
    """``ru`` for a message mostly in Cyrillic, ``en`` for Latin, else ``default``.

    Slash commands are ignored: "/start" says nothing about the customer's language.
    """
    letters = _SLASH_COMMAND.sub(" ", text)
    cyrillic = len(_CYRILLIC.findall(letters))
    latin = len(_LATIN.findall(letters))
    if cyrillic and cyrillic >= latin:
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
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BUTTON_NUMBER = re.compile(r"\s*(\d{1,2})\s*[.)]?\s*")


def _phrase(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.replace("ё", "е").replace("Ё", "Е").lower()))


def _command(flow: Flow, text: str) -> str | None:
    """``start``, ``cancel``, ``help``, ``unknown`` (another slash command) or ``None``."""
    stripped = text.strip()
    if stripped.startswith("/"):
        # "/start@shop_bot" in Telegram groups, "/start promo" from deep links.
        head = stripped.split(maxsplit=1)[0].split("@", 1)[0].lower()
        return _COMMANDS.get(head, "unknown")
    # Cancel and restart words count only as the whole message: an address or a name may
    # contain them, and eating a customer's answer is worse than asking once more.
    phrase = _phrase(stripped)
    if phrase and phrase in {_phrase(w) for w in flow.cancel_words}:
        return "cancel"
    if phrase and phrase in {_phrase(w) for w in flow.restart_words}:
        return "start"
    return None


def _render(template: str, values: Mapping[str, str]) -> str:
    # One pass with a function: a value containing "{phone}" is inserted as is, never expanded.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _display(value: object) -> str:
    if value is None:
        return "—"
    return str(value)


def _values(flow: Flow, current: Step | None, data: Mapping[str, Any]) -> dict[str, str]:
    values = dict(flow.vars)
    if current is not None:
        values |= {
            key: str(value)
            for key, value in current.params.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool)
        }
    values |= {key: _display(value) for key, value in data.items()}
    return values


def _prompt(flow: Flow, current: Step, language: str, data: Mapping[str, Any]) -> Reply:
    text = _render(current.prompt[language], _values(flow, current, data))
    return Reply(text, current.buttons.get(language, ()))


def _with_prompt(
    flow: Flow, current: Step, language: str, data: Mapping[str, Any], before: str
) -> Reply:
    prompt = _prompt(flow, current, language, data)
    text = _render(before, _values(flow, current, data))
    return Reply(f"{text}\n\n{prompt.text}", prompt.buttons)


def _ended(
    state: DialogState,
    outcome: Literal["completed", "cancelled", "abandoned"],
    now: float,
    *,
    last_step: str | None = None,
    message_count: int | None = None,
) -> DialogEnded:
    return DialogEnded(
        outcome=outcome,
        last_step=last_step or state.step,
        message_count=state.message_count if message_count is None else message_count,
        started_at=state.started_at,
        ended_at=now,
    )


def _begin(flow: Flow, language: str, now: float) -> tuple[DialogState, tuple[Reply, ...]]:
    state = DialogState(
        step=flow.start,
        language=language,
        data={},
        started_at=now,
        updated_at=now,
        message_count=1,
    )
    first = flow.steps[flow.start]
    greeting = Reply(_render(flow.text("greeting", language), flow.vars))
    return state, (greeting, _prompt(flow, first, language, state.data))


def step(
    flow: Flow, state: DialogState | None, text: str, now: float, *, options: DialogOptions
) -> StepResult:
    """Handle one customer message.

    ``state`` is what the previous call returned (``None`` for a customer without a dialog),
    ``now`` is the message time in unix seconds. Pure: the same arguments give the same result.
    """
    effects: list[Effect] = []
    if state is not None and (
        state.updated_at + options.idle_timeout < now
        # A state from an older version of the flow, or one that should have ended: start over.
        or state.step not in flow.steps
        or flow.steps[state.step].end is not None
    ):
        effects.append(_ended(state, "abandoned", now))
        state = None
    command = _command(flow, text)

    if state is None:
        wanted = options.default_language
        if options.detect_language:
            wanted = detect_language(text, options.default_language)
        language = flow.language(wanted if wanted in flow.languages else options.default_language)
        if command == "cancel":
            return StepResult(None, (Reply(flow.text("cancelled", language)),), tuple(effects))
        new_state, replies = _begin(flow, language, now)
        return StepResult(new_state, replies, tuple(effects))

    language = flow.language(state.language)
    if command == "start":
        # The /start itself is the first message of the new dialog, not the last of the old one.
        effects.append(_ended(state, "abandoned", now))
        new_state, replies = _begin(flow, language, now)
        return StepResult(new_state, replies, tuple(effects))

    current = flow.steps[state.step]
    advanced = dataclasses.replace(state, updated_at=now, message_count=state.message_count + 1)
    if command == "cancel":
        effects.append(_ended(advanced, "cancelled", now))
        return StepResult(None, (Reply(flow.text("cancelled", language)),), tuple(effects))
    if command in ("help", "unknown"):
        before = flow.text("help" if command == "help" else "unknown_command", language)
        if command == "help" and current.help:
            before = f"{before}\n\n{current.help[language]}"
        reply = _with_prompt(flow, current, language, state.data, before)
        return StepResult(advanced, (reply,), tuple(effects))
    if not text.strip():
        reply = _with_prompt(flow, current, language, state.data, flow.text("empty", language))
        return StepResult(advanced, (reply,), tuple(effects))
    return _answer(flow, current, advanced, language, text, options, effects)


def _answer(
    flow: Flow,
    current: Step,
    state: DialogState,
    language: str,
    text: str,
    options: DialogOptions,
    effects: list[Effect],
) -> StepResult:
    """Validate an answer to ``current`` and move on, or re-ask with the reason's text."""
    buttons = current.buttons.get(language, ())
    number = _BUTTON_NUMBER.fullmatch(text)
    # With numeric labels ("1", "2", "5") a typed number is the label itself, not its position.
    numeric_labels = any(label.strip().isdigit() for label in buttons)
    if buttons and number and not numeric_labels and 1 <= int(number.group(1)) <= len(buttons):
        # Channels without buttons show them numbered; the number stands for the label.
        text = buttons[int(number.group(1)) - 1]

    value: Any
    skip_words = {_phrase(w) for words in current.skip.values() for w in words}
    if skip_words and _phrase(text) in skip_words:
        value = None
    else:
        assert current.validator is not None  # only end steps lack one, and they are never current
        context = ValidationContext(current.params, options.phone_region, buttons)
        result = VALIDATORS[current.validator].run(text, context)
        if isinstance(result, Invalid):
            texts = current.errors.get(result.reason) or current.errors["default"]
            reply = Reply(_render(texts[language], _values(flow, current, state.data)), buttons)
            return StepResult(state, (reply,), tuple(effects))
        value = result.value

    data = dict(state.data)
    if current.field is not None:
        data[current.field] = value
    target = flow.steps[_next_step(current, value)]

    if target.end is None:
        moved = dataclasses.replace(state, step=target.name, data=data)
        return StepResult(moved, (_prompt(flow, target, language, data),), tuple(effects))
    if target.end == "completed":
        effects.append(
            CreateOrder(
                phone=_text_value(data.get("phone")),
                address=_text_value(data.get("address")),
                quantity=_int_value(data.get("quantity")),
                language=language,
                data=data,
            )
        )
        # Not rendered: {order_id} is the worker's to fill, and nothing else may be in it.
        reply = Reply(target.text[language])
    else:
        reply = Reply(_render(target.text[language], _values(flow, None, data)))
    effects.append(_ended(state, target.end, state.updated_at, last_step=target.name))
    return StepResult(None, (reply,), tuple(effects))


def _text_value(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int_value(value: object) -> int | None:
    # bool is an int subclass; True is not one bottle.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _next_step(current: Step, value: object) -> str:
    if isinstance(current.next, str):
        return current.next
    assert current.next is not None
    if value is None:
        key = "null"  # a skipped step
    elif isinstance(value, bool):
        key = "yes" if value else "no"
    else:
        key = str(value)
    target = current.next.get(key, current.next.get("*"))
    if target is None:
        raise FlowError(f"step {current.name}: next has no entry for {key!r} and no '*'")
    return target
