"""The dialog engine: one pure function from (flow, state, message) to (state, replies, effects).

No I/O happens here. The worker loads the state, calls :func:`step`, stores the order and the
replies that come back, and saves the new state; everything about the conversation itself
(commands, timeouts, languages, re-asks, Back and Cancel, the edit menu, the list of model files)
is decided here, from the flow's data.

Files are I/O, so they never reach this module as bytes: the worker fetches, checks and stores
what the customer attached *before* the step (see :mod:`orderbot.files`) and passes each result as
a :class:`ReceivedFile` (stored, or refused with a reason); the engine only keeps the list.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson

from orderbot.dialog import browse
from orderbot.dialog.flow import Catalog, CatalogEntry, Flow, Step
from orderbot.dialog.validators import (
    FILES_REMOVE_LAST,
    VALIDATORS,
    Invalid,
    ValidationContext,
)
from orderbot.dialog.wording import money as _money
from orderbot.dialog.wording import phrase as _phrase
from orderbot.dialog.wording import phrases as _phrases
from orderbot.dialog.wording import render as _render
from orderbot.errors import FlowError
from orderbot.messages import Attachment

__all__ = [
    "CreateOrder",
    "DialogEnded",
    "DialogOptions",
    "DialogState",
    "Effect",
    "ReceivedFile",
    "Reply",
    "StepResult",
    "detect_language",
    "error_reply",
    "order_lines",
    "question",
    "render_buttons_as_text",
    "step",
    "wants_files",
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
    return_to: str | None = None
    """Set while a step picked from an edit menu is being changed: where the dialog goes back."""
    catalog_page: int | None = None
    """The catalog page (from 0) the last reply listed (``/services``), until the next message:
    "more", a number or an item's name then refer to it."""
    restart_asked: bool = False
    """``/order`` came mid-dialog and was asked to be sent again to start over."""

    def to_json(self) -> bytes:
        """The stored form of the state."""
        return orjson.dumps(self)  # orjson writes dataclasses itself, 15x faster than asdict

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
                return_to=obj.get("return_to"),
                catalog_page=obj.get("catalog_page"),
                restart_asked=obj.get("restart_asked", False),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"dialog state lacks a field: {exc}") from exc
        if not (
            isinstance(state.step, str)
            and isinstance(state.language, str)
            and isinstance(state.data, dict)
            and isinstance(state.message_count, int)
            and isinstance(state.return_to, str | None)
            and (type(state.catalog_page) is int or state.catalog_page is None)
            and isinstance(state.restart_asked, bool)
        ):
            raise ValueError("dialog state has a field of the wrong type")
        return state


@dataclass(frozen=True, slots=True)
class Reply:
    """One message to the customer; ``buttons`` are choice labels, in order."""

    text: str
    buttons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """A file the customer attached, after the worker fetched, checked and stored it.

    ``refused`` is ``None`` for a stored model file, else a reason code from
    ``validators.FILE_REASONS`` (``image``, ``damaged``, ``too_large``, ``telegram_limit``, ...);
    ``limit`` is the byte limit that a ``too_large``/``telegram_limit`` refusal is about.
    """

    name: str
    checksum: str = ""
    size: int = 0
    format: str = ""
    path: str = ""
    refused: str | None = None
    limit: int | None = None

    def to_data(self) -> dict[str, Any]:
        """The form kept in the dialog data and in the order: JSON values only."""
        return {
            "name": self.name,
            "checksum": self.checksum,
            "size": self.size,
            "format": self.format,
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class CreateOrder:
    """Effect: store an order. ``data`` is everything collected, for flows beyond water; with a
    catalog it also holds ``items`` (``[{id, name, quantity, unit_price, unit}]``, prices as
    decimal strings), ``total`` (a decimal string) and ``currency``; a model-files step leaves
    ``files`` (``[{name, checksum, size, format, path}]``)."""

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
    "/services": "services",
    "/catalog": "services",
    "/order": "order",
}
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
    if phrase and phrase in _phrases(flow.cancel_words):
        return "cancel"
    if phrase and phrase in _phrases(flow.restart_words):
        return "start"
    if phrase and phrase in _phrases(browse.SERVICES_WORDS):
        return "services"
    return None


def _display(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        names = [str(v["name"]) if isinstance(v, dict) and "name" in v else str(v) for v in value]
        return ", ".join(names) if names else "—"
    return str(value)


def _quantity(catalog: Catalog, data: Mapping[str, Any]) -> int:
    if catalog.quantity_field is None:
        return 1
    counted = data.get(catalog.quantity_field)
    if isinstance(counted, list):
        return max(1, len(counted))
    if isinstance(counted, int) and not isinstance(counted, bool) and counted > 0:
        return counted
    return 1


def order_lines(flow: Flow, data: Mapping[str, Any], language: str) -> list[dict[str, Any]]:
    """The line items of an order with ``data`` (empty without a catalog or a chosen item):
    ``[{id, name, quantity, unit_price, unit}]``, prices as exact decimal strings."""
    catalog = flow.catalog
    item = catalog.get(data.get(catalog.field)) if catalog is not None else None
    if catalog is None or item is None:
        return []
    language = flow.language(language)
    return [
        {
            "id": item.id,
            "name": item.name[language],
            "quantity": _quantity(catalog, data),
            "unit_price": str(item.price.quantize(Decimal("0.01"))),
            "unit": item.unit[language],
        }
    ]


def _line_total(line: Mapping[str, Any]) -> Decimal:
    return Decimal(line["unit_price"]) * int(line["quantity"])


def _catalog_values(flow: Flow, data: Mapping[str, Any], language: str) -> dict[str, str]:
    catalog = flow.catalog
    assert catalog is not None
    currency = catalog.currency_name[language]
    listing = [
        f"{index}. {item.name[language]} — {_money(item.price)} {currency} / {item.unit[language]}"
        f"\n{item.description[language]}"
        for index, item in enumerate(catalog.items, start=1)
    ]
    lines = order_lines(flow, data, language)
    rendered = [
        f"{line['name']}: {line['quantity']} × {_money(Decimal(line['unit_price']))} {currency}"
        f" = {_money(_line_total(line))} {currency}"
        for line in lines
    ]
    total = sum((_line_total(line) for line in lines), Decimal(0))
    return {
        "catalog": "\n".join(listing),
        "order_lines": "\n".join(rendered) if rendered else "—",
        "total": f"{_money(total)} {currency}" if lines else "—",
        "currency": currency,
    }


def _choice_label(step: Step, value: object, language: str) -> str | None:
    """The button label of a choice step's value (``"PETG"`` for ``petg``), if it has one."""
    if step.validator != "catalog_choice":
        return None
    items = step.params.get("items", [])
    labels = step.buttons.get(language, ())
    if len(labels) != len(items):
        return None
    for item, label in zip(items, labels, strict=True):
        if item.get("id") == value:
            return label
    return None


def _values(
    flow: Flow, current: Step | None, data: Mapping[str, Any], language: str
) -> dict[str, str]:
    values = dict(flow.vars)
    if current is not None:
        values |= {
            key: str(value)
            for key, value in current.params.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool)
        }
    for other in flow.steps.values():
        if other.field is not None:
            values.setdefault(other.field, "—")  # a field not (or no longer) collected
    values |= {key: _display(value) for key, value in data.items()}
    for other in flow.steps.values():
        if other.field is not None and other.field in data:
            label = _choice_label(other, data[other.field], language)
            if label is not None:
                values[other.field] = label
    if flow.catalog is not None:
        values |= _catalog_values(flow, data, language)
    return values


# --------------------------------------------------------------------------------------------
# where a dialog stands: the path its answers take, Back, the buttons shown


def _path(flow: Flow, data: Mapping[str, Any]) -> list[str]:
    """The steps the answers in ``data`` lead through, from the start to the first step that
    has no answer (or no field). Fields of steps off this path are stale: a branch was changed."""
    path: list[str] = []
    name = flow.start
    while name not in path:
        path.append(name)
        current = flow.steps[name]
        if current.end is not None or current.field is None or current.field not in data:
            break
        try:
            name = _next_step(current, data[current.field])
        except FlowError:
            break
    return path


def _prune(flow: Flow, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without the fields of steps the answers no longer lead through (an address
    after switching to pickup)."""
    fields = {flow.steps[name].field for name in _path(flow, data)}
    return {key: value for key, value in data.items() if key in fields}


def _summaries(flow: Flow) -> set[str]:
    return {s.returns_to for s in flow.steps.values() if s.returns_to is not None}


def _back_target(
    flow: Flow, current: Step, data: Mapping[str, Any], return_to: str | None
) -> str | None:
    if not flow.back_label:
        return None
    if return_to is not None:
        return return_to  # Back while changing one answer: leave it as it was
    if current.returns_to is not None:
        return current.returns_to
    path = _path(flow, data)
    if current.name in path:
        index = path.index(current.name)
        return path[index - 1] if index > 0 else None
    return path[-1] if path[-1] != current.name else None


def _options(
    flow: Flow, current: Step, language: str, data: Mapping[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The step's params and option labels as shown now. An edit menu shows only the steps the
    answers lead through (no "address" after choosing pickup)."""
    labels = current.buttons.get(language, ())
    if current.returns_to is None or not isinstance(current.next, Mapping):
        return dict(current.params), labels
    on_path = set(_path(flow, data)) | {current.returns_to}
    items = current.params.get("items", [])
    kept = [
        (item, label)
        for item, label in zip(items, labels, strict=True)
        if current.next.get(str(item["id"]), current.next.get("*")) in on_path
    ]
    params = dict(current.params, items=[item for item, _ in kept])
    return params, tuple(label for _, label in kept)


def _buttons(
    flow: Flow, current: Step, language: str, data: Mapping[str, Any], return_to: str | None
) -> tuple[str, ...]:
    _, labels = _options(flow, current, language, data)
    navigation: tuple[str, ...] = ()
    if _back_target(flow, current, data, return_to) is not None:
        navigation += (flow.back_label[language],)
    if flow.cancel_label:
        navigation += (flow.cancel_label[language],)
    return labels + navigation


def _prompt(
    flow: Flow,
    current: Step,
    language: str,
    data: Mapping[str, Any],
    return_to: str | None = None,
) -> Reply:
    text = _render(current.prompt[language], _values(flow, current, data, language))
    return Reply(text, _buttons(flow, current, language, data, return_to))


def _with_prompt(
    flow: Flow,
    current: Step,
    language: str,
    data: Mapping[str, Any],
    before: str,
    return_to: str | None = None,
) -> Reply:
    prompt = _prompt(flow, current, language, data, return_to)
    text = _render(before, _values(flow, current, data, language))
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


def wants_files(flow: Flow, state: DialogState | None) -> bool:
    """Whether the dialog waits for model files, so the worker should fetch attachments first
    (and not download a photo sent at the address step)."""
    if state is None or state.step not in flow.steps:
        return False
    return flow.steps[state.step].validator == "model_files"


def step(
    flow: Flow,
    state: DialogState | None,
    text: str,
    now: float,
    *,
    options: DialogOptions,
    attachments: Sequence[Attachment | ReceivedFile] = (),
    buttons: bool = True,
) -> StepResult:
    """Handle one customer message.

    ``state`` is what the previous call returned (``None`` for a customer without a dialog),
    ``now`` is the message time in unix seconds, ``attachments`` what the message carried: a
    :class:`ReceivedFile` once the worker fetched and checked it, a bare ``Attachment`` when
    nobody did (a file step then says it could not get the file). ``buttons``: whether the
    channel shows buttons (Telegram) or numbered text (Chat2Desk); only the catalog listing
    differs (:mod:`orderbot.dialog.browse`). Pure: the same arguments give the same result.
    """
    effects: list[Effect] = []
    if state is not None and (
        state.updated_at + options.idle_timeout < now
        # A state from an older version of the flow, or one that should have ended: start over.
        or state.step not in flow.steps
        or flow.steps[state.step].end is not None
        or (state.return_to is not None and state.return_to not in flow.steps)
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
        if command == "services":
            return _show_catalog(flow, None, language, 0, now, buttons, effects)
        # A button of an old listing: an order button, "Next ›".
        action = browse.read(flow, text, None, numbers=False)
        if isinstance(action, browse.ShowPage):
            return _show_catalog(flow, None, language, action.page, now, buttons, effects)
        if isinstance(action, browse.PickItem):
            return _pick_item(flow, None, language, action.item, now, options, effects)
        new_state, replies = _begin(flow, language, now)
        return StepResult(new_state, replies, tuple(effects))

    language = flow.language(state.language)
    if command == "start" or (command == "order" and state.restart_asked):
        # The /start itself is the first message of the new dialog, not the last of the old one.
        effects.append(_ended(state, "abandoned", now))
        new_state, replies = _begin(flow, language, now)
        return StepResult(new_state, replies, tuple(effects))
    if command == "order" and not state.data:
        # Nothing collected yet (say, only the catalog was shown): the same dialog, from its
        # first question, without asking whether to drop it.
        new_state, replies = _begin(flow, language, now)
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
        return _cancel(flow, advanced, language, effects, now)
    if command in ("help", "unknown"):
        before = flow.text("help" if command == "help" else "unknown_command", language)
        if command == "help" and current.help:
            before = f"{before}\n\n{current.help[language]}"
        reply = _with_prompt(flow, current, language, state.data, before, state.return_to)
        return StepResult(advanced, (reply,), tuple(effects))
    if command == "order":
        before = browse.browse_text(flow, "order_in_progress", language)
        reply = _with_prompt(flow, current, language, state.data, before, state.return_to)
        asked = dataclasses.replace(advanced, restart_asked=True)
        return StepResult(asked, (reply,), tuple(effects))
    if command == "services":
        return _show_catalog(flow, advanced, language, 0, now, buttons, effects)
    # A location pin is no file: at a file step it is read like a message without text.
    files = [a for a in attachments if not (isinstance(a, Attachment) and a.kind == "location")]
    if files and current.validator == "model_files":
        return _receive_files(flow, current, advanced, language, files, effects)
    if not text.strip():
        reply = _with_prompt(
            flow, current, language, state.data, flow.text("empty", language), state.return_to
        )
        return StepResult(advanced, (reply,), tuple(effects))
    numbers = _numbered_listing(flow, current, language, state.data, state.return_to, buttons)
    action = browse.read(flow, text, state.catalog_page, numbers=numbers)
    if isinstance(action, browse.ShowPage):
        return _show_catalog(flow, advanced, language, action.page, now, buttons, effects)
    if isinstance(action, browse.PickItem):
        return _pick_item(flow, advanced, language, action.item, now, options, effects)

    shown = _buttons(flow, current, language, state.data, state.return_to)
    number = _BUTTON_NUMBER.fullmatch(text)
    # With numeric labels ("1", "2", "5") a typed number is the label itself, not its position.
    numeric_labels = any(label.strip().isdigit() for label in shown)
    if shown and number and not numeric_labels and 1 <= int(number.group(1)) <= len(shown):
        # Channels without buttons show them numbered; the number stands for the label.
        text = shown[int(number.group(1)) - 1]
    phrase = _phrase(text)
    if flow.cancel_label and phrase == _phrase(flow.cancel_label[language]):
        return _cancel(flow, advanced, language, effects, now)
    back = _back_target(flow, current, state.data, state.return_to)
    back_phrases = {_phrase(label) for label in flow.back_label.values()}
    back_phrases |= {_phrase(word) for word in flow.back_words}
    if back is not None and phrase in back_phrases:
        data = _prune(flow, state.data) if back in _summaries(flow) else state.data
        moved = dataclasses.replace(advanced, step=back, data=data, return_to=None)
        reply = _prompt(flow, flow.steps[back], language, data)
        return StepResult(moved, (reply,), tuple(effects))
    return _answer(flow, current, advanced, language, text, options, effects)


def _catalog_step(flow: Flow) -> Step | None:
    """The step where the customer chooses from the catalog (it collects the catalog's field)."""
    if flow.catalog is None:
        return None
    return next((s for s in flow.steps.values() if s.field == flow.catalog.field), None)


def _numbered_listing(
    flow: Flow,
    current: Step | None,
    language: str,
    data: Mapping[str, Any],
    return_to: str | None,
    buttons: bool,
) -> bool:
    """Whether a listing without buttons numbers its items (and a bare number then picks one).
    Not when the question re-asked after it shows numbered options of its own: "2" would then
    mean two things; names still work."""
    if buttons:
        return False
    if current is None or current is _catalog_step(flow):
        return True
    return not _buttons(flow, current, language, data, return_to)


def _show_catalog(
    flow: Flow,
    state: DialogState | None,
    language: str,
    page: int,
    now: float,
    buttons: bool,
    effects: list[Effect],
) -> StepResult:
    """A catalog page (or, without a catalog, what the shop offers), then the current question
    again. Without a dialog one begins, so that "more", a number or a name can follow; the
    catalog step's question is not repeated after the list: the list asks the same."""
    greeting: tuple[Reply, ...] = ()
    if state is None:
        if flow.catalog is None:
            offer = browse.browse_text(flow, "services", language)
            return StepResult(None, (Reply(offer),), tuple(effects))
        state, (first_greeting, _) = _begin(flow, language, now)
        greeting = (first_greeting,)
    current = flow.steps[state.step]
    if flow.catalog is None:
        offer = browse.browse_text(flow, "services", language)
        reply = _with_prompt(flow, current, language, state.data, offer, state.return_to)
        return StepResult(state, (reply,), tuple(effects))
    numbered = _numbered_listing(flow, current, language, state.data, state.return_to, buttons)
    shown = browse.listing(flow, language, page, buttons=buttons, numbered=numbered)
    replies = greeting + tuple(Reply(text, labels) for text, labels in shown)
    if current is not _catalog_step(flow):
        replies += (_prompt(flow, current, language, state.data, state.return_to),)
    listed = dataclasses.replace(state, catalog_page=browse.clamp_page(flow.catalog, page))
    return StepResult(listed, replies, tuple(effects))


def _pick_item(
    flow: Flow,
    state: DialogState | None,
    language: str,
    item: CatalogEntry,
    now: float,
    options: DialogOptions,
    effects: list[Effect],
) -> StepResult:
    """An item ordered from the catalog listing, as if chosen at the catalog step: at (or
    before reaching) that step the dialog goes on from it; past it, the choice is changed and
    the current question asked again (nothing collected is lost)."""
    assert flow.catalog is not None
    if state is None:
        state, _ = _begin(flow, language, now)
    chosen = browse.browse_text(
        flow,
        "catalog_chosen",
        language,
        {"name": item.name[language], "price": browse.price(flow, item, language)},
    )
    choice = _catalog_step(flow)
    if choice is not None and state.step == choice.name:
        # The catalog step's validator reads item names in every language.
        result = _answer(flow, choice, state, language, item.name[language], options, effects)
        first, *rest = result.replies
        replies = (Reply(f"{chosen}\n\n{first.text}", first.buttons), *rest)
        return StepResult(result.state, replies, result.effects)
    data = {**state.data, flow.catalog.field: item.id}
    path = _path(flow, data)
    # A catalog step that branches on the item may lead elsewhere now: go on where the new
    # choice leads, at its first unanswered step.
    target = state.step if state.step in path or state.return_to is not None else path[-1]
    return_to = state.return_to if target == state.step else None
    moved = dataclasses.replace(state, step=target, data=data, return_to=return_to)
    reply = _with_prompt(flow, flow.steps[target], language, data, chosen, return_to)
    return StepResult(moved, (reply,), tuple(effects))


def _cancel(
    flow: Flow, state: DialogState, language: str, effects: list[Effect], now: float
) -> StepResult:
    effects.append(_ended(state, "cancelled", now))
    return StepResult(None, (Reply(flow.text("cancelled", language)),), tuple(effects))


def _error_text(current: Step, reason: str) -> Mapping[str, str]:
    texts = current.errors.get(reason) or current.errors.get("default")
    if texts is None:
        # A reason the flow has no text for (a newer files module): the closest general one.
        texts = current.errors.get("unsupported") or next(iter(current.errors.values()))
    return texts


def _receive_files(
    flow: Flow,
    current: Step,
    state: DialogState,
    language: str,
    attachments: Sequence[Attachment | ReceivedFile],
    effects: list[Effect],
) -> StepResult:
    """Add the stored model files to the step's list; say why any other one was refused."""
    assert current.field is not None  # load_flow insists on it for model_files
    files: list[Any] = list(state.data.get(current.field) or [])
    max_files = int(current.params.get("max_files", 10))
    lines: list[str] = []
    for attachment in attachments:
        received = (
            attachment
            if isinstance(attachment, ReceivedFile)
            else ReceivedFile(name=attachment.name, refused="download_failed")
        )
        reason = received.refused
        if reason is None and len(files) >= max_files:
            reason = "too_many"
        if reason is None:
            files.append(received.to_data())
        template = current.messages["received"] if reason is None else _error_text(current, reason)
        values = _values(flow, current, {**state.data, current.field: files}, language)
        values |= {
            "file_name": received.name or "—",
            "file_count": str(len(files)),
            "limit_mb": str((received.limit or 0) // (1024 * 1024)),
        }
        lines.append(_render(template[language], values))
    data = {**state.data, current.field: files}
    moved = dataclasses.replace(state, data=data)
    buttons = _buttons(flow, current, language, data, state.return_to)
    return StepResult(moved, (Reply("\n".join(lines), buttons),), tuple(effects))


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
    shown = _buttons(flow, current, language, state.data, state.return_to)

    def refuse(reason: str, extra: Mapping[str, str] | None = None) -> StepResult:
        values = _values(flow, current, state.data, language) | dict(extra or {})
        reply = Reply(_render(_error_text(current, reason)[language], values), shown)
        return StepResult(state, (reply,), tuple(effects))

    value: Any
    skip_words = {_phrase(w) for words in current.skip.values() for w in words}
    if skip_words and _phrase(text) in skip_words:
        value = None
    else:
        assert current.validator is not None  # only end steps lack one, and they are never current
        params, labels = _options(flow, current, language, state.data)
        context = ValidationContext(params, options.phone_region, labels)
        result = VALIDATORS[current.validator].run(text, context)
        if isinstance(result, Invalid):
            return refuse(result.reason)
        value = result.value

    data = dict(state.data)
    if current.validator == "model_files":
        assert current.field is not None
        files = list(data.get(current.field) or [])
        if not files:
            return refuse("no_files", {"file_count": "0", "file_name": "—", "limit_mb": "0"})
        if value == FILES_REMOVE_LAST:
            removed = files.pop()
            data[current.field] = files
            values = _values(flow, current, data, language) | {
                "file_name": str(removed.get("name", "")) or "—",
                "file_count": str(len(files)),
                "limit_mb": "0",
            }
            reply = Reply(
                _render(current.messages["removed"][language], values),
                _buttons(flow, current, language, data, state.return_to),
            )
            return StepResult(dataclasses.replace(state, data=data), (reply,), tuple(effects))
        value = files
    if current.field is not None:
        data[current.field] = value
    target_name = _next_step(current, value)
    return_to = state.return_to
    if current.returns_to is not None:
        # Picked from an edit menu: change that one answer, then come back.
        return_to = current.returns_to if target_name != current.returns_to else None
    elif return_to is not None:
        following = flow.steps[target_name]
        # Go on only to a step the new answer newly needs (an address after choosing delivery).
        if (
            target_name == return_to
            or following.end is not None
            or following.field is None
            or following.field in data
        ):
            target_name, return_to = return_to, None
    target = flow.steps[target_name]

    if target.end is None:
        if target_name in _summaries(flow):
            data = _prune(flow, data)
        moved = dataclasses.replace(state, step=target.name, data=data, return_to=return_to)
        reply = _prompt(flow, target, language, data, return_to)
        return StepResult(moved, (reply,), tuple(effects))
    data = _prune(flow, data)
    if target.end == "completed":
        order_data = dict(data)
        lines = order_lines(flow, data, language)
        if flow.catalog is not None and lines:
            total = sum((_line_total(line) for line in lines), Decimal(0))
            order_data |= {
                "items": lines,
                "total": str(total.quantize(Decimal("0.01"))),
                "currency": flow.catalog.currency,
            }
        effects.append(
            CreateOrder(
                phone=_text_value(data.get("phone")),
                address=_text_value(data.get("address")),
                quantity=_int_value(data.get("quantity")),
                language=language,
                data=order_data,
            )
        )
        # Not rendered: {order_id} is the worker's to fill, and nothing else may be in it.
        reply = Reply(target.text[language])
    else:
        reply = Reply(_render(target.text[language], _values(flow, None, data, language)))
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
    return _prompt(flow, current, flow.language(state.language), state.data, state.return_to)
