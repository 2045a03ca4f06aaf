"""Where a dialog stands: the path its answers take through the flow's steps, where Back leads,
and the buttons a question shows.

A flow branches (delivery or pickup, one printing technology or another) and an answer can be
changed later from an edit menu, so "the previous step" and "the fields still wanted" are never
stored: they are worked out from the answers each time, here. The engine, its handlers and its
rendering all ask the same questions, so they share these answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orderbot.dialog.flow import Flow, Step
from orderbot.errors import FlowError

__all__ = [
    "answer_path",
    "back_target",
    "next_step",
    "prune",
    "step_buttons",
    "step_options",
    "summaries",
]


def answer_path(flow: Flow, data: Mapping[str, Any]) -> list[str]:
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
            name = next_step(current, data[current.field])
        except FlowError:
            break
    return path


def prune(flow: Flow, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without the fields of steps the answers no longer lead through (an address
    after switching to pickup)."""
    fields = {flow.steps[name].field for name in answer_path(flow, data)}
    return {key: value for key, value in data.items() if key in fields}


def summaries(flow: Flow) -> set[str]:
    return {s.returns_to for s in flow.steps.values() if s.returns_to is not None}


def back_target(
    flow: Flow, current: Step, data: Mapping[str, Any], return_to: str | None
) -> str | None:
    if not flow.back_label:
        return None
    if return_to is not None:
        return return_to  # Back while changing one answer: leave it as it was
    if current.returns_to is not None:
        return current.returns_to
    path = answer_path(flow, data)
    if current.name in path:
        index = path.index(current.name)
        return path[index - 1] if index > 0 else None
    return path[-1] if path[-1] != current.name else None


def step_options(
    flow: Flow, current: Step, language: str, data: Mapping[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The step's params and option labels as shown now. An edit menu shows only the steps the
    answers lead through (no "address" after choosing pickup)."""
    labels = current.buttons.get(language, ())
    if current.returns_to is None or not isinstance(current.next, Mapping):
        return dict(current.params), labels
    on_path = set(answer_path(flow, data)) | {current.returns_to}
    items = current.params.get("items", [])
    kept = [
        (item, label)
        for item, label in zip(items, labels, strict=True)
        if current.next.get(str(item["id"]), current.next.get("*")) in on_path
    ]
    params = dict(current.params, items=[item for item, _ in kept])
    return params, tuple(label for _, label in kept)


def step_buttons(
    flow: Flow, current: Step, language: str, data: Mapping[str, Any], return_to: str | None
) -> tuple[str, ...]:
    _, labels = step_options(flow, current, language, data)
    navigation: tuple[str, ...] = ()
    if back_target(flow, current, data, return_to) is not None:
        navigation += (flow.back_label[language],)
    if flow.cancel_label:
        navigation += (flow.cancel_label[language],)
    return labels + navigation


def next_step(current: Step, value: object) -> str:
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
