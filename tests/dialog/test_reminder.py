"""The one reminder of an unfinished order, as the pure engine decides it (issue 16, item 7):
the step's question again in the dialog's language, once, never after a cancel or an order,
and an order placed after it recorded as ``recovered``."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from orderbot.dialog.engine import step
from orderbot.dialog.flow import Flow
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogEnded, DialogOptions, DialogState, StepResult
from orderbot.dialog.reminder import remind

T0 = 1_700_000_000.0
OPTIONS = DialogOptions()
AFTER = 1800.0


@pytest.fixture(scope="module")
def water() -> Flow:
    return load_flow("water")


@pytest.fixture(scope="module")
def printing() -> Flow:
    return load_flow("printing")


def talk(flow: Flow, *texts: str, state: DialogState | None = None) -> StepResult:
    now = T0 if state is None else state.updated_at
    result = StepResult(state, (), ())
    for text in texts:
        now += 1
        result = step(flow, result.state, text, now, options=OPTIONS)
    return result


def at_phone(flow: Flow, greeting: str = "Здравствуйте") -> DialogState:
    state = talk(flow, greeting, "ул. Токтогула 1, кв 5").state
    assert state is not None and state.step == "WAITING_PHONE"
    return state


@pytest.mark.parametrize(
    ("greeting", "reminder", "asked"),
    [
        ("Здравствуйте", "Вы не закончили заказ воды", "телефон"),
        ("Hello", "You haven't finished your water order", "phone"),
        ("Саламатсызбы", "Суу буйрутмаңыз бүтө элек", "телефон"),
    ],
)
def test_the_reminder_asks_the_steps_question_again_in_the_dialogs_language(
    water: Flow, greeting: str, reminder: str, asked: str
) -> None:
    state = at_phone(water, greeting)
    due = remind(water, state, state.updated_at + AFTER, options=OPTIONS, after=AFTER)
    assert due is not None
    marked, reply = due
    assert reply.text.startswith(reminder)
    assert asked in reply.text.lower()
    question = step(water, state, "/help", state.updated_at + 1, options=OPTIONS)
    asked_again = question.replies[-1].text.split("\n\n")[-1]
    assert reply.text.endswith("\n\n" + asked_again)  # the very question of the step
    assert marked.reminded and marked.step == "WAITING_PHONE" and marked.data == state.data
    assert marked.updated_at == state.updated_at  # idle time still counts from the customer


def test_the_printing_flow_has_its_own_reminder_in_kyrgyz(printing: Flow) -> None:
    state = talk(printing, "Саламатсызбы", "1").state
    assert state is not None and state.step == "NAME" and state.language == "ky"
    due = remind(printing, state, state.updated_at + AFTER, options=OPTIONS, after=AFTER)
    assert due is not None
    assert due[1].text.startswith("Басып чыгаруу буйрутмаңыз бүтө элек")
    assert "Атыңызды жазыңыз" in due[1].text


def test_no_reminder_before_its_time_when_off_or_twice(water: Flow) -> None:
    state = at_phone(water)
    soon = state.updated_at + AFTER - 1
    assert remind(water, state, soon, options=OPTIONS, after=AFTER) is None
    assert remind(water, state, state.updated_at + AFTER, options=OPTIONS, after=0) is None
    due = remind(water, state, state.updated_at + AFTER, options=OPTIONS, after=AFTER)
    assert due is not None
    later = state.updated_at + 5 * AFTER
    assert remind(water, due[0], later, options=OPTIONS, after=AFTER) is None


def test_no_reminder_once_the_dialog_would_start_over(water: Flow) -> None:
    state = at_phone(water)
    late = state.updated_at + OPTIONS.idle_timeout + 1
    assert remind(water, state, late, options=OPTIONS, after=AFTER) is None


def test_no_reminder_after_a_cancel_or_an_order(water: Flow) -> None:
    state = at_phone(water)
    cancelled = talk(water, "/cancel", state=state)
    assert remind(water, cancelled.state, T0 + 2 * AFTER, options=OPTIONS, after=AFTER) is None
    ordered = talk(water, "0555 123 456", "2", "Да", state=state)
    assert any(isinstance(e, DialogEnded) for e in ordered.effects)
    assert remind(water, ordered.state, T0 + 2 * AFTER, options=OPTIONS, after=AFTER) is None


def test_an_answer_to_the_reminder_resumes_the_step_and_the_order_counts_as_recovered(
    water: Flow,
) -> None:
    state = at_phone(water)
    due = remind(water, state, state.updated_at + AFTER, options=OPTIONS, after=AFTER)
    assert due is not None
    reminded = dataclasses.replace(due[0], updated_at=state.updated_at + AFTER)
    resumed = talk(water, "0555 123 456", state=reminded)
    assert resumed.state is not None and resumed.state.step == "WAITING_QUANTITY"
    assert resumed.state.reminded  # kept: never a second reminder in this dialog
    done = talk(water, "2", "Да", state=resumed.state)
    (ended,) = [e for e in done.effects if isinstance(e, DialogEnded)]
    assert ended.outcome == "recovered"
    # without a reminder the same order is an ordinary completion
    plain = talk(water, "0555 123 456", "2", "Да", state=state)
    (ended,) = [e for e in plain.effects if isinstance(e, DialogEnded)]
    assert ended.outcome == "completed"


def test_a_cancel_after_the_reminder_stays_a_cancel(water: Flow) -> None:
    state = at_phone(water)
    due = remind(water, state, state.updated_at + AFTER, options=OPTIONS, after=AFTER)
    assert due is not None
    cancelled = talk(water, "/cancel", state=due[0])
    (ended,) = [e for e in cancelled.effects if isinstance(e, DialogEnded)]
    assert ended.outcome == "cancelled"


def test_the_reminder_mark_and_route_survive_the_stored_form(water: Flow) -> None:
    state = dataclasses.replace(at_phone(water), reminded=True, route={"transport": "wa_dialog"})
    assert DialogState.from_json(state.to_json()) == state
    # a state stored before reminders existed reads as not reminded, no route
    old = {k: v for k, v in dataclasses.asdict(state).items() if k not in ("reminded", "route")}
    again = DialogState.from_json(orjson.dumps(old))
    assert not again.reminded and again.route == {}
