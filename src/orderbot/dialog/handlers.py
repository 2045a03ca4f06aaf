"""What the engine does with each kind of message once :func:`~orderbot.dialog.engine.step` has
told them apart: begin or end a dialog, show the catalog or take an item from it, keep received
files, and take an answer to the current question (validate it, store it, move on or re-ask).

Each handler gets the state already advanced for this message and the effects gathered so far,
and returns the whole :class:`StepResult`; none of them does I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from orderbot.dialog import browse
from orderbot.dialog.flow import CatalogEntry, Flow, Step
from orderbot.dialog.hours import next_opening, when_text
from orderbot.dialog.models import (
    CreateOrder,
    DialogEnded,
    DialogOptions,
    DialogState,
    Effect,
    ReceivedFile,
    Reply,
    StepResult,
)
from orderbot.dialog.navigation import (
    answer_path,
    next_step,
    prune,
    step_buttons,
    step_options,
    summaries,
)
from orderbot.dialog.notes import note
from orderbot.dialog.rendering import (
    line_total,
    order_lines,
    render_prompt,
    summary_values,
    with_prompt,
)
from orderbot.dialog.validators.base import Invalid, ValidationContext
from orderbot.dialog.validators.choices import FILES_REMOVE_LAST
from orderbot.dialog.validators.registry import VALIDATORS
from orderbot.dialog.wording import phrase as _phrase
from orderbot.dialog.wording import render as _render
from orderbot.messages import Attachment

__all__ = [
    "begin_dialog",
    "cancel_dialog",
    "dialog_ended",
    "handle_answer",
    "numbered_listing",
    "pick_item",
    "receive_files",
    "show_catalog",
]


def dialog_ended(
    state: DialogState,
    outcome: Literal["completed", "recovered", "cancelled", "abandoned"],
    now: float,
    *,
    last_step: str | None = None,
    message_count: int | None = None,
) -> DialogEnded:
    if outcome == "completed" and state.reminded:
        outcome = "recovered"  # an order the reminder brought back
    return DialogEnded(
        outcome=outcome,
        last_step=last_step or state.step,
        message_count=state.message_count if message_count is None else message_count,
        started_at=state.started_at,
        ended_at=now,
    )


def begin_dialog(flow: Flow, language: str, now: float) -> tuple[DialogState, tuple[Reply, ...]]:
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
    return state, (greeting, render_prompt(flow, first, language, state.data))


def _catalog_step(flow: Flow) -> Step | None:
    """The step where the customer chooses from the catalog (it collects the catalog's field)."""
    if flow.catalog is None:
        return None
    return next((s for s in flow.steps.values() if s.field == flow.catalog.field), None)


def numbered_listing(
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
    return not step_buttons(flow, current, language, data, return_to)


def show_catalog(
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
        state, (first_greeting, _) = begin_dialog(flow, language, now)
        greeting = (first_greeting,)
    current = flow.steps[state.step]
    if flow.catalog is None:
        offer = browse.browse_text(flow, "services", language)
        reply = with_prompt(flow, current, language, state.data, offer, state.return_to)
        return StepResult(state, (reply,), tuple(effects))
    numbered = numbered_listing(flow, current, language, state.data, state.return_to, buttons)
    shown = browse.listing(flow, language, page, buttons=buttons, numbered=numbered)
    replies = greeting + tuple(Reply(text, labels) for text, labels in shown)
    if current is not _catalog_step(flow):
        replies += (render_prompt(flow, current, language, state.data, state.return_to),)
    listed = dataclasses.replace(state, catalog_page=browse.clamp_page(flow.catalog, page))
    return StepResult(listed, replies, tuple(effects))


def pick_item(
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
        state, _ = begin_dialog(flow, language, now)
    chosen = browse.browse_text(
        flow,
        "catalog_chosen",
        language,
        {"name": item.name[language], "price": browse.price(flow, item, language)},
    )
    choice = _catalog_step(flow)
    if choice is not None and state.step == choice.name:
        # The catalog step's validator reads item names in every language.
        result = handle_answer(flow, choice, state, language, item.name[language], options, effects)
        first, *rest = result.replies
        replies = (Reply(f"{chosen}\n\n{first.text}", first.buttons), *rest)
        return StepResult(result.state, replies, result.effects)
    data = {**state.data, flow.catalog.field: item.id}
    path = answer_path(flow, data)
    # A catalog step that branches on the item may lead elsewhere now: go on where the new
    # choice leads, at its first unanswered step.
    target = state.step if state.step in path or state.return_to is not None else path[-1]
    return_to = state.return_to if target == state.step else None
    moved = dataclasses.replace(state, step=target, data=data, return_to=return_to)
    reply = with_prompt(flow, flow.steps[target], language, data, chosen, return_to)
    return StepResult(moved, (reply,), tuple(effects))


def cancel_dialog(
    flow: Flow, state: DialogState, language: str, effects: list[Effect], now: float
) -> StepResult:
    effects.append(dialog_ended(state, "cancelled", now))
    return StepResult(None, (Reply(flow.text("cancelled", language)),), tuple(effects))


def _error_text(current: Step, reason: str) -> Mapping[str, str]:
    texts = current.errors.get(reason) or current.errors.get("default")
    if texts is None:
        # A reason the flow has no text for (a newer files module): the closest general one.
        texts = current.errors.get("unsupported") or next(iter(current.errors.values()))
    return texts


def receive_files(
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
        values = summary_values(flow, current, {**state.data, current.field: files}, language)
        values |= {
            "file_name": received.name or "—",
            "file_count": str(len(files)),
            "limit_mb": str((received.limit or 0) // (1024 * 1024)),
        }
        lines.append(_render(template[language], values))
    data = {**state.data, current.field: files}
    moved = dataclasses.replace(state, data=data)
    buttons = step_buttons(flow, current, language, data, state.return_to)
    return StepResult(moved, (Reply("\n".join(lines), buttons),), tuple(effects))


def handle_answer(
    flow: Flow,
    current: Step,
    state: DialogState,
    language: str,
    text: str,
    options: DialogOptions,
    effects: list[Effect],
) -> StepResult:
    """Validate an answer to ``current`` and move on, or re-ask with the reason's text."""
    shown = step_buttons(flow, current, language, state.data, state.return_to)

    def refuse(reason: str, extra: Mapping[str, str] | None = None) -> StepResult:
        values = summary_values(flow, current, state.data, language) | dict(extra or {})
        reply = Reply(_render(_error_text(current, reason)[language], values), shown)
        return StepResult(state, (reply,), tuple(effects))

    value: Any
    skip_words = {_phrase(w) for words in current.skip.values() for w in words}
    if skip_words and _phrase(text) in skip_words:
        value = None
    else:
        assert current.validator is not None  # only end steps lack one, and they are never current
        params, labels = step_options(flow, current, language, state.data)
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
            values = summary_values(flow, current, data, language) | {
                "file_name": str(removed.get("name", "")) or "—",
                "file_count": str(len(files)),
                "limit_mb": "0",
            }
            reply = Reply(
                _render(current.messages["removed"][language], values),
                step_buttons(flow, current, language, data, state.return_to),
            )
            return StepResult(dataclasses.replace(state, data=data), (reply,), tuple(effects))
        value = files
    if current.field is not None:
        data[current.field] = value
    target_name = next_step(current, value)
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
        if target_name in summaries(flow):
            data = prune(flow, data)
        moved = dataclasses.replace(state, step=target.name, data=data, return_to=return_to)
        reply = render_prompt(flow, target, language, data, return_to)
        return StepResult(moved, (reply,), tuple(effects))
    data = prune(flow, data)
    if target.end == "completed":
        order_data = dict(data)
        lines = order_lines(flow, data, language)
        if flow.catalog is not None and lines:
            total = sum((line_total(line) for line in lines), Decimal(0))
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
        text = target.text[language]
        if flow.hours is not None:
            opening = next_opening(flow.hours, state.updated_at)
            if opening is not None:
                # Our own words only (no customer data), so still nothing but {order_id}.
                when = when_text(opening, state.updated_at, language)
                text += "\n" + note(flow, "closed_note", language, {"when": when})
        reply = Reply(text)
    else:
        reply = Reply(_render(target.text[language], summary_values(flow, None, data, language)))
    effects.append(dialog_ended(state, target.end, state.updated_at, last_step=target.name))
    return StepResult(None, (reply,), tuple(effects))


def _text_value(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int_value(value: object) -> int | None:
    # bool is an int subclass; True is not one bottle.
    return value if isinstance(value, int) and not isinstance(value, bool) else None
