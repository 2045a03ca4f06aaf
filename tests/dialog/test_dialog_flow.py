"""load_flow: the shipped flow loads, and every kind of broken flow fails with a clear line."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orderbot.dialog.engine import step
from orderbot.dialog.loader import FLOWS_DIR, load_flow
from orderbot.dialog.models import DialogOptions
from orderbot.errors import FlowError

TWO = {"ru": "текст", "en": "text"}


def minimal() -> dict[str, Any]:
    """The smallest valid flow: one question, then an order."""
    return {
        "name": "mini",
        "languages": ["ru", "en"],
        "start": "ASK_QTY",
        "vars": {"manager_phone": "+996 555 000 000"},
        "texts": {
            key: dict(TWO) for key in ("greeting", "help", "cancelled", "empty", "unknown_command")
        },
        "steps": {
            "ASK_QTY": {
                "prompt": {"ru": "Сколько? до {max}", "en": "How many? up to {max}"},
                "validator": "quantity",
                "params": {"min": 1, "max": 5},
                "field": "quantity",
                "errors": {"default": {"ru": "Число!", "en": "A number! {manager_phone}"}},
                "next": "DONE",
            },
            "DONE": {"end": "completed", "text": {"ru": "№{order_id}", "en": "#{order_id}"}},
        },
    }


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_shipped_water_flow_loads_by_name_and_by_path() -> None:
    by_name = load_flow("water")
    by_path = load_flow(FLOWS_DIR / "water.yaml")
    assert by_name == by_path
    assert by_name.name == "water"
    assert by_name.languages == ("ru", "en")
    assert by_name.start == "WAITING_ADDRESS"
    assert by_name.steps["WAITING_QUANTITY"].params == {"min": 1, "max": 50}
    assert by_name.steps["WAITING_CONFIRMATION"].next == {"yes": "COMPLETED", "no": "DECLINED"}


def test_minimal_flow_loads_and_runs(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, minimal()))
    options = DialogOptions()
    first = step(flow, None, "hi", 0.0, options=options)
    assert first.replies[1].text == "How many? up to 5"
    wrong = step(flow, first.state, "9", 1.0, options=options)
    assert wrong.replies[0].text == "A number! +996 555 000 000"  # default error text
    done = step(flow, first.state, "2", 1.0, options=options)
    assert done.state is None
    assert done.replies[0].text == "#{order_id}"


def test_unknown_shipped_flow() -> None:
    with pytest.raises(FlowError, match=r"unknown flow 'nope' \(shipped flows: .*water"):
        load_flow("nope")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match=r"cannot read flow file .*missing\.yaml"):
        load_flow(tmp_path / "missing.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsteps: [\n  - a: b\n  c\n", encoding="utf-8")
    with pytest.raises(FlowError, match=r"bad\.yaml: YAML syntax error at line \d+"):
        load_flow(path)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        target[last] = value

    return apply


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        del target[last]

    return apply


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.clear(), "missing top-level key 'name'"),
        (_delete("steps"), "missing top-level key 'steps'"),
        (_set("colour", "blue"), "top level: unknown key 'colour'"),
        (_set("languages", []), "languages: must be a non-empty list"),
        (_set("start", "NOWHERE"), "start: step 'NOWHERE' does not exist"),
        (_set("start", "DONE"), "start: step 'DONE' is an end step"),
        (_delete("texts.greeting"), "texts: missing text 'greeting'"),
        (_delete("texts.help.en"), "texts.help: missing text for language 'en'"),
        (_set("texts.help.kk", "x"), "texts.help: language 'kk' is not in the flow's languages"),
        (_set("texts.help.ru", ""), r"texts.help.ru: must be a non-empty string"),
        (
            _delete("steps.ASK_QTY.prompt.en"),
            "steps.ASK_QTY.prompt: missing text for language 'en'",
        ),
        (
            _set("steps.ASK_QTY.validator", "telepathy"),
            "steps.ASK_QTY.validator: unknown validator 'telepathy'",
        ),
        (_delete("steps.ASK_QTY.validator"), "steps.ASK_QTY: missing key 'validator'"),
        (
            _set("steps.ASK_QTY.params", {"min": 9, "max": 1}),
            r"steps.ASK_QTY.params: quantity: needs min <= max",
        ),
        (
            _set("steps.ASK_QTY.next", "GONE"),
            "steps.ASK_QTY.next: step 'GONE' does not exist",
        ),
        (
            _set("steps.ASK_QTY.next", {"yes": "DONE", "no": "GONE"}),
            "steps.ASK_QTY.next: step 'GONE' does not exist",
        ),
        (_set("steps.ASK_QTY.nxt", "DONE"), "steps.ASK_QTY: unknown key 'nxt'"),
        (
            _set("steps.ASK_QTY.errors", {"decimal": TWO}),
            "steps.ASK_QTY.errors: missing text for reason 'negative'",
        ),
        (
            _set("steps.ASK_QTY.errors.too_big", TWO),
            "steps.ASK_QTY.errors: quantity has no reason 'too_big'",
        ),
        (
            _set("steps.ASK_QTY.prompt.en", "How many {bottles}?"),
            r"steps.ASK_QTY.prompt.en: unknown placeholder \{bottles\}",
        ),
        (
            _set("steps.ASK_QTY.prompt.en", "Order {order_id}?"),
            r"unknown placeholder \{order_id\} \(only an end step",
        ),
        (
            _set("steps.ASK_QTY.buttons", {"ru": ["1", "2"], "en": ["1"]}),
            "steps.ASK_QTY.buttons: every language needs the same number of labels",
        ),
        (
            _set("steps.ASK_QTY.buttons", {"ru": ["1"]}),
            "steps.ASK_QTY.buttons: missing labels for language 'en'",
        ),
        (_set("steps.ASK_QTY.field", "order_id"), "'order_id' is reserved"),
        (
            _set("steps.ASK_QTY.buttons", {"ru": ["Да"], "en": [True]}),
            r"steps.ASK_QTY.buttons.en: must be a string, got True \(quote yes/no",
        ),
        (_set("steps.DONE.end", "finished"), "steps.DONE.end: must be 'completed' or 'cancelled'"),
        (_delete("steps.DONE.text"), "steps.DONE: missing key 'text'"),
        (
            _set("steps.DONE.text.en", "Thanks!"),
            r"steps.DONE.text.en: must contain \{order_id\}",
        ),
        (
            _set("steps.DONE.text.en", "#{order_id} to {quantity}"),
            r"steps.DONE.text.en: only \{order_id\} is allowed here, not \{quantity\}",
        ),
        (_set("steps", {}), "steps: a flow needs at least one step"),
        (
            _set("steps.ASK_QTY.next", {"3": "DONE"}),
            r"steps.ASK_QTY.next: quantity values are open-ended; add a '\*' entry",
        ),
        (_set("steps.ASK_QTY", "just text"), "steps.ASK_QTY: must be a mapping"),
    ],
)
def test_broken_flow_fails_with_a_clear_message(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = copy.deepcopy(minimal())
    change(data)
    with pytest.raises(FlowError, match=message) as info:
        load_flow(write(tmp_path, data))
    text = str(info.value)
    assert "\n" not in text
    assert str(tmp_path / "flow.yaml") in text


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="top level: must be a mapping"):
        load_flow(write(tmp_path, ["a", "b"]))


def _confirm_step(next_step: object) -> dict[str, Any]:
    data = minimal()
    data["steps"]["ASK_QTY"]["next"] = "CONFIRM"
    data["steps"]["CONFIRM"] = {
        "prompt": {"ru": "{quantity}?", "en": "{quantity}?"},
        "validator": "yes_no",
        "errors": {"unclear": TWO},
        "next": next_step,
    }
    data["steps"]["NOPE"] = {"end": "cancelled", "text": TWO}
    return data


@pytest.mark.parametrize(
    ("next_step", "message"),
    [
        ({"yes": "DONE"}, r"steps.CONFIRM.next: no step for value 'no' \(add it or a '\*' entry\)"),
        ({"yes": "DONE", "no": "NOPE", "maybe": "NOPE"}, "yes_no never gives 'maybe'"),
    ],
)
def test_branches_must_match_the_validator(tmp_path: Path, next_step: object, message: str) -> None:
    with pytest.raises(FlowError, match=message):
        load_flow(write(tmp_path, _confirm_step(next_step)))


@pytest.mark.parametrize(
    "next_step",
    [{"yes": "DONE", "no": "NOPE"}, {"yes": "DONE", "*": "NOPE"}, {True: "DONE", False: "NOPE"}],
)
def test_branches_that_cover_every_value_load(tmp_path: Path, next_step: object) -> None:
    flow = load_flow(write(tmp_path, _confirm_step(next_step)))
    assert set(flow.steps["CONFIRM"].next or {}) <= {"yes", "no", "*"}


def test_open_ended_branch_with_catch_all_loads(tmp_path: Path) -> None:
    data = minimal()
    data["steps"]["ASK_QTY"]["next"] = {"5": "DONE", "*": "DONE"}
    assert load_flow(write(tmp_path, data)).steps["ASK_QTY"].next == {"5": "DONE", "*": "DONE"}
