"""Acting on a message read as a person writes it: a question is answered (or passed to an
operator) and the step asked again; a button of an older message is recognised as such; a word
typed in the wrong keyboard layout is read as meant; every detail a message gives is stored,
what changed is said, questions already answered are not asked again, and when everything is
there the summary comes at once.

:func:`respond` takes over where :func:`~orderbot.dialog.engine.step` used to hand a message to
:func:`~orderbot.dialog.handlers.handle_answer`; it still hands the current question's own answer to
it, so validation, branching, edit menus and the order itself stay where they were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from orderbot.dialog.flow import Flow, Step
from orderbot.dialog.handlers import handle_answer
from orderbot.dialog.layout import other_layout
from orderbot.dialog.models import (
    AskOperator,
    DialogOptions,
    DialogState,
    Effect,
    Reply,
    StepResult,
)
from orderbot.dialog.navigation import answer_path, prune, step_buttons, step_options, summaries
from orderbot.dialog.notes import note
from orderbot.dialog.rendering import render_prompt, summary_values, with_prompt
from orderbot.dialog.understanding import (
    FREE_TEXT,
    detail_steps,
    faq_answer,
    is_question,
    read,
    wants_edit,
    wants_repeat,
)
from orderbot.dialog.validators.base import Invalid, ValidationContext
from orderbot.dialog.validators.registry import VALIDATORS
from orderbot.dialog.wording import phrase, render

__all__ = ["repeat_offer", "respond"]

_CHOICES = frozenset({"yes_no", "catalog_choice"})


def respond(
    flow: Flow,
    current: Step,
    state: DialogState,
    language: str,
    text: str,
    options: DialogOptions,
    effects: list[Effect],
    *,
    media: bool = False,
    first: bool = False,
) -> StepResult:
    """Handle ``text`` as the customer's message at ``current`` (``state`` already advanced
    for it). ``media``: it is the caption of a photo or file; ``first``: it opened the dialog
    (its greeting is added by the caller)."""
    if state.known and wants_repeat(text):
        # "Как обычно": the last order's details, straight to the summary.
        data, _ = _merge(flow, state.data, state.known, language)
        return _apply(flow, current, state, language, data, None, effects, quiet=True)
    if is_question(text):
        return _question(flow, current, state, language, text, effects)
    if _stale_button(flow, current, language, state, text):
        before = note(flow, "stale_button", language)
        reply = with_prompt(flow, current, language, state.data, before, state.return_to)
        return StepResult(state, (reply,), tuple(effects))
    if current.validator == "model_files":
        return handle_answer(flow, current, state, language, text, options, effects)
    if current.validator in _CHOICES:
        meant = _as_meant(flow, current, language, state, text, options)
        if meant is not None:
            result = handle_answer(flow, current, state, language, meant, options, effects)
            return _onwards(flow, current, state, language, result)
    reading = read(
        flow,
        current,
        state.data,
        text,
        region=options.phone_region,
        language=language,
        first=first,
        media=media,
        known=state.known,
    )
    if current.validator in _CHOICES:
        change = reading.change
        if not reading.values and change is None and _is_summary(current):
            if wants_edit(text):
                # "Изменить" at a summary without an edit menu: say how to change a detail.
                fields = [n for n in detail_steps(flow) if n in _path_fields(flow, state.data)]
                examples = ", ".join(f"«{_label(flow, n, language)} …»" for n in fields)
                before = note(flow, "edit_hint", language, {"fields": examples})
                reply = with_prompt(flow, current, language, state.data, before, None)
                return StepResult(state, (reply,), tuple(effects))
            change = _named_field(flow, state.data, text)
        if not reading.values and change is None:
            return handle_answer(flow, current, state, language, text, options, effects)
        return _apply(flow, current, state, language, reading.values, change, effects)
    if not reading.values and reading.change is None:
        if reading.answer is not None:
            result = handle_answer(flow, current, state, language, reading.answer, options, effects)
            return _onwards(flow, current, state, language, result)
        if current.validator in FREE_TEXT:
            # Only a greeting, "I want water", or a photo: nothing to store, ask again.
            caption = media and current.validator == "address"
            if caption:
                before = note(flow, "media_caption", language)
                reply = with_prompt(flow, current, language, state.data, before, state.return_to)
            else:
                reply = render_prompt(flow, current, language, state.data, state.return_to)
            return StepResult(state, (reply,), tuple(effects))
        return handle_answer(flow, current, state, language, text, options, effects)
    if reading.answer is None:
        return _apply(flow, current, state, language, reading.values, reading.change, effects)
    data, told = _merge(flow, state.data, reading.values, language)
    merged = dataclasses.replace(state, data=data)
    result = handle_answer(flow, current, merged, language, reading.answer, options, effects)
    return _told(_onwards(flow, current, merged, language, result), told)


def repeat_offer(flow: Flow, details: Mapping[str, Any], language: str) -> Reply | None:
    """The flow's ``repeat_offer`` with the last order's ``details``, for a returning
    customer; None without details or without the text."""
    texts = flow.texts.get("repeat_offer")
    if not details or texts is None:
        return None
    return Reply(
        render(texts[flow.language(language)], summary_values(flow, None, details, language))
    )


def _as_meant(
    flow: Flow,
    current: Step,
    language: str,
    state: DialogState,
    text: str,
    options: DialogOptions,
) -> str | None:
    """``text`` if the choice step takes it, or its other keyboard layout if that one is
    taken ("lf" for "да"); else None."""
    assert current.validator is not None
    params, labels = step_options(flow, current, language, state.data)
    context = ValidationContext(params, options.phone_region, labels)
    validator = VALIDATORS[current.validator]
    if not isinstance(validator.run(text, context), Invalid):
        return text
    swapped = other_layout(text)
    if swapped is not None and not isinstance(validator.run(swapped, context), Invalid):
        return swapped
    return None


def _question(
    flow: Flow,
    current: Step,
    state: DialogState,
    language: str,
    text: str,
    effects: list[Effect],
) -> StepResult:
    """The FAQ's answer, or "an operator will answer" (and the operators get the question);
    then the same question again. Nothing of the message is stored as an answer."""
    answer = faq_answer(flow, text, language)
    if answer is None:
        answer = note(flow, "question_unknown", language)
        effects.append(AskOperator(question=text, step=current.name, language=language))
    reply = with_prompt(flow, current, language, state.data, answer, state.return_to)
    return StepResult(state, (reply,), tuple(effects))


def _stale_button(flow: Flow, current: Step, language: str, state: DialogState, text: str) -> bool:
    """``text`` is exactly a button of another question (pressed on an older message), not
    one of this question's."""
    said = phrase(text)
    if not said or said not in _all_labels(flow):
        return False
    shown = {phrase(label) for label in step_buttons(flow, current, language, state.data, None)}
    shown |= {phrase(label) for labels in current.buttons.values() for label in labels}
    return said not in shown


_LABELS: dict[int, tuple[Flow, frozenset[str]]] = {}


def _all_labels(flow: Flow) -> frozenset[str]:
    """Every button label of every question of ``flow``, as phrases; once per loaded flow."""
    cached = _LABELS.get(id(flow))
    if cached is not None and cached[0] is flow:
        return cached[1]
    if len(_LABELS) > 64:
        _LABELS.clear()
    labels = frozenset(
        phrase(label)
        for other in flow.steps.values()
        for labels in other.buttons.values()
        for label in labels
    )
    _LABELS[id(flow)] = (flow, labels)
    return labels


def _is_summary(current: Step) -> bool:
    """A question that collects nothing and is no edit menu: the summary before the order."""
    return current.field is None and current.returns_to is None


def _path_fields(flow: Flow, data: Mapping[str, Any]) -> set[str]:
    return {
        f for f in (flow.steps[name].field for name in answer_path(flow, data)) if f is not None
    }


def _named_field(flow: Flow, data: Mapping[str, Any], text: str) -> str | None:
    """The detail whose label is the whole message ("адрес", "phone"): at a summary, the
    customer wants to change it."""
    said = phrase(text)
    for name, target in detail_steps(flow).items():
        if name in data and any(
            said == phrase(label) for labels in target.labels.values() for label in labels
        ):
            return name
    return None


def _label(flow: Flow, name: str, language: str) -> str:
    target = detail_steps(flow).get(name)
    if target is not None:
        labels = target.labels.get(flow.language(language))
        if labels:
            return labels[0]
    return name


def _merge(
    flow: Flow, data: Mapping[str, Any], values: Mapping[str, Any], language: str
) -> tuple[dict[str, Any], str]:
    """``data`` with ``values`` in it, and the note saying what was taken and what changed."""
    merged = dict(data)
    noted: list[str] = []
    changed: list[str] = []
    for name, value in values.items():
        if merged.get(name) is not None and merged[name] != value:
            changed.append(name)
        elif merged.get(name) is None:
            noted.append(name)
        merged[name] = value
    shown = summary_values(flow, None, merged, language)
    lines: list[str] = []
    for key, names in (("details_noted", noted), ("details_changed", changed)):
        if names:
            details = ", ".join(f"{_label(flow, n, language)} — {shown[n]}" for n in names)
            lines.append(note(flow, key, language, {"details": details}))
    return merged, "\n".join(lines)


def _apply(
    flow: Flow,
    current: Step,
    state: DialogState,
    language: str,
    values: Mapping[str, Any],
    change: str | None,
    effects: list[Effect],
    *,
    quiet: bool = False,
) -> StepResult:
    """Store details that do not answer the current question, say so (unless ``quiet``), and
    ask what comes next: the same question, the next one still open, or (all there) the
    summary again."""
    data, told = _merge(flow, state.data, values, language)
    if quiet:
        told = ""
    steps = detail_steps(flow)
    if change is not None and change not in values and change in steps:
        # "адрес другой": ask that question, then come back here.
        target = steps[change]
        moved = dataclasses.replace(state, step=target.name, data=data, return_to=current.name)
        before = note(flow, "change_field", language, {"field": _label(flow, change, language)})
        told = f"{told}\n{before}" if told else before
        reply = with_prompt(flow, target, language, data, told, current.name)
        return StepResult(moved, (reply,), tuple(effects))
    name = current.name
    return_to = state.return_to
    if (
        return_to is None and not (current.field is not None and current.field in data)
    ) or return_to is None:
        name = answer_path(flow, data)[-1]
    target = flow.steps[name]
    if name in summaries(flow) or target.field is None:
        data = prune(flow, data) if name in summaries(flow) else data
    moved = dataclasses.replace(state, step=name, data=data, return_to=return_to)
    reply = (
        with_prompt(flow, target, language, data, told, return_to)
        if told
        else render_prompt(flow, target, language, data, return_to)
    )
    return StepResult(moved, (reply,), tuple(effects))


def _onwards(
    flow: Flow, current: Step, before: DialogState, language: str, result: StepResult
) -> StepResult:
    """After the current question was answered: past questions the same message already
    answered, to the first one still open (or the summary)."""
    after = result.state
    if (
        after is None
        or before.return_to is not None
        or after.return_to is not None
        or after.step == current.name
        or flow.steps[after.step].field not in after.data
    ):
        return result
    path = answer_path(flow, after.data)
    name = path[-1]
    # Only forward: a flow that branches back ("no" -> the first question) means to ask again.
    forward = (
        current.name in path
        and after.step in path
        and path.index(after.step) > path.index(current.name)
    )
    if not forward or name == after.step or flow.steps[name].end is not None:
        return result
    data = prune(flow, after.data) if name in summaries(flow) else after.data
    moved = dataclasses.replace(after, step=name, data=data)
    reply = render_prompt(flow, flow.steps[name], language, data)
    return StepResult(moved, (*result.replies[:-1], reply), result.effects)


def _told(result: StepResult, told: str) -> StepResult:
    if not told or not result.replies:
        return result
    first, *rest = result.replies
    return StepResult(
        result.state, (Reply(f"{told}\n\n{first.text}", first.buttons), *rest), result.effects
    )
