"""Whole conversations through the pure engine with the shipped water flow."""

from __future__ import annotations

from pathlib import Path

import pytest

import orderbot.dialog.engine
import orderbot.dialog.flow
import orderbot.dialog.loader
import orderbot.dialog.models
from orderbot.dialog.engine import error_reply, step
from orderbot.dialog.flow import Flow
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import (
    CreateOrder,
    DialogEnded,
    DialogOptions,
    DialogState,
    Reply,
    StepResult,
)
from orderbot.dialog.rendering import render_buttons_as_text

T0 = 1_700_000_000.0
OPTIONS = DialogOptions()


@pytest.fixture(scope="module")
def water() -> Flow:
    return load_flow("water")


class Chat:
    """Drives one customer's conversation; the clock advances a second per message."""

    def __init__(self, flow: Flow, options: DialogOptions = OPTIONS) -> None:
        self.flow = flow
        self.options = options
        self.state: DialogState | None = None
        self.now = T0

    def say(self, text: str, *, after: float = 1.0) -> StepResult:
        self.now += after
        result = step(self.flow, self.state, text, self.now, options=self.options)
        # Every state the engine hands out must survive storage.
        if result.state is not None:
            assert DialogState.from_json(result.state.to_json()) == result.state
        self.state = result.state
        return result

    def text(self, text: str, *, after: float = 1.0) -> str:
        return "\n---\n".join(r.text for r in self.say(text, after=after).replies)


def test_public_api_is_exported() -> None:
    # Each public name has one home (issue 15: no re-exports); each home lists it in __all__.
    homes = {
        "load_flow": orderbot.dialog.loader,
        "Flow": orderbot.dialog.flow,
        "step": orderbot.dialog.engine,
        "DialogState": orderbot.dialog.models,
        "StepResult": orderbot.dialog.models,
        "error_reply": orderbot.dialog.engine,
    }
    for name, module in homes.items():
        assert name in module.__all__, name
        assert getattr(module, name).__module__ == module.__name__, name


def test_russian_conversation_from_greeting_to_order(water: Flow) -> None:
    chat = Chat(water)
    first = chat.say("Здравствуйте")
    assert len(first.replies) == 2
    assert "Здравствуйте!" in first.replies[0].text
    assert "адрес доставки" in first.replies[1].text
    assert first.state is not None
    assert first.state.step == "WAITING_ADDRESS"
    assert first.state.language == "ru"
    assert first.state.data == {}  # the greeting message is not taken as the address
    assert first.effects == ()

    assert "Адрес слишком короткий" in chat.text("ул")
    assert "нет названия улицы" in chat.text("12345 67")
    assert "слишком длинный" in chat.text("ул. " + "а" * 300)
    assert chat.state is not None
    assert chat.state.step == "WAITING_ADDRESS"

    assert "номер телефона" in chat.text("  ул. Киевская   120, кв. 5 ")
    assert "Не получилось распознать номер" in chat.text("123")
    assert "0555 123 456" in chat.text("123")  # the re-ask shows an example
    assert "Сколько бутылей" in chat.text("мой номер 0555 123 456")

    assert "целиком" in chat.text("1.5")
    assert "отрицательным" in chat.text("-5")
    assert "одно число" in chat.text("2 или 3")
    assert "Не понял количество" in chat.text("много")
    assert "Минимальный заказ" in chat.text("0")
    too_many = chat.text("51")
    assert "менеджером" in too_many
    assert "+996 555 000 000" in too_many
    assert "{" not in too_many

    summary = chat.say("три бутыли")
    (reply,) = summary.replies
    assert "ул. Киевская 120, кв. 5" in reply.text
    assert "+996555123456" in reply.text
    assert "Бутылей: 3" in reply.text
    assert reply.buttons == ("Да", "Нет")
    assert summary.effects == ()

    assert "«Да» или «Нет»" in chat.text("не знаю")
    done = chat.say("Да, всё верно")
    assert done.state is None
    (final,) = done.replies
    assert "{order_id}" in final.text
    assert final.text.count("{") == 1  # the only placeholder left is the order number
    order, ended = done.effects
    assert order == CreateOrder(
        phone="+996555123456",
        address="ул. Киевская 120, кв. 5",
        quantity=3,
        language="ru",
        data={"address": "ул. Киевская 120, кв. 5", "phone": "+996555123456", "quantity": 3},
    )
    assert isinstance(ended, DialogEnded)
    assert ended.outcome == "completed"
    assert ended.last_step == "COMPLETED"
    assert ended.message_count == 17
    assert ended.started_at == T0 + 1
    assert ended.ended_at == chat.now


def test_english_conversation_declined_stores_no_order(water: Flow) -> None:
    chat = Chat(water)
    greeting = chat.text("Hi, I need water")
    assert "Hello!" in greeting
    assert "delivery address" in greeting
    assert "too short" in chat.text("st")
    assert "phone number" in chat.text("120 Kievskaya St, apt 5")
    assert "could not read" in chat.text("+9965551234567")
    assert "How many" in chat.text("+996 (555) 123-456")
    assert "whole bottles" in chat.text("1,5")
    assert "just one number" in chat.text("2 or 3")
    summary = chat.say("twenty-five bottles")
    assert "Bottles: 25" in summary.replies[0].text
    assert summary.replies[0].buttons == ("Yes", "No")
    declined = chat.say("no")
    assert declined.state is None
    assert "not placed" in declined.replies[0].text
    assert not any(isinstance(e, CreateOrder) for e in declined.effects)
    (ended,) = declined.effects
    assert isinstance(ended, DialogEnded)
    assert ended.outcome == "cancelled"
    assert ended.last_step == "DECLINED"


def _to_confirmation(chat: Chat, *, address: str = "ул. Токтогула 1") -> None:
    chat.say("Привет")
    chat.say(address)
    chat.say("0555123456")
    chat.say("2")
    assert chat.state is not None
    assert chat.state.step == "WAITING_CONFIRMATION"


def test_button_number_answers_the_confirmation(water: Flow) -> None:
    chat = Chat(water)
    _to_confirmation(chat)
    result = chat.say("1")
    assert any(isinstance(e, CreateOrder) for e in result.effects)


def test_customer_text_is_never_a_format_string(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    chat.say("ул. {phone} {order_id} {0} %s 5")
    chat.say("0555123456")
    summary = chat.say("2")
    assert "Адрес: ул. {phone} {order_id} {0} %s 5\n" in summary.replies[0].text
    assert "Телефон: +996555123456" in summary.replies[0].text
    done = chat.say("да")
    # The completion text holds no customer data, so the worker's replace hits one spot only.
    assert done.replies[0].text.count("{order_id}") == 1
    assert "Киевская" not in done.replies[0].text


def test_after_completion_the_next_message_starts_a_new_dialog(water: Flow) -> None:
    chat = Chat(water)
    _to_confirmation(chat)
    chat.say("да")
    assert chat.state is None
    again = chat.say("ещё воды")
    assert again.state is not None
    assert again.state.step == "WAITING_ADDRESS"
    assert again.state.message_count == 1
    assert again.effects == ()
    assert "Здравствуйте!" in again.replies[0].text


def test_start_restarts_and_abandons_the_old_dialog(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    chat.say("ул. Токтогула 1")
    result = chat.say("/start")
    assert result.state is not None
    assert result.state.step == "WAITING_ADDRESS"
    assert result.state.data == {}
    assert result.state.language == "ru"  # kept, although "/start" is Latin
    assert result.state.message_count == 1
    assert result.state.started_at == chat.now
    assert "Здравствуйте!" in result.replies[0].text
    (ended,) = result.effects
    assert ended == DialogEnded("abandoned", "WAITING_PHONE", 2, T0 + 1, chat.now)


def test_start_without_a_dialog_greets_in_the_default_language(water: Flow) -> None:
    result = Chat(water).say("/start")
    assert result.effects == ()
    assert result.state is not None
    assert result.state.language == "ru"
    assert "Здравствуйте!" in result.replies[0].text


@pytest.mark.parametrize(
    "text", ["/cancel", "/CANCEL", "/cancel@water_bot", "отмена", "Отмена!", "cancel", "стоп"]
)
def test_cancel_ends_without_an_order(water: Flow, text: str) -> None:
    chat = Chat(water)
    chat.say("Привет")
    chat.say("ул. Токтогула 1")
    result = chat.say(text)
    assert result.state is None
    assert "отменён" in result.replies[0].text
    (ended,) = result.effects
    assert ended == DialogEnded("cancelled", "WAITING_PHONE", 3, T0 + 1, chat.now)


def test_cancel_word_inside_an_answer_is_an_answer(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    result = chat.say("ул. Отмена 5")  # a street may be called anything
    assert result.state is not None
    assert result.state.step == "WAITING_PHONE"
    assert result.state.data["address"] == "ул. Отмена 5"


def test_cancel_without_a_dialog_just_says_goodbye(water: Flow) -> None:
    result = Chat(water).say("cancel")
    assert result.state is None
    assert result.effects == ()
    assert "cancelled" in result.replies[0].text


def test_help_explains_and_reasks_the_current_step(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Hello")
    chat.say("120 Kievskaya St")
    chat.say("0555123456")
    result = chat.say("/help")
    assert result.state is not None
    assert result.state.step == "WAITING_QUANTITY"
    assert result.state.message_count == 4
    (reply,) = result.replies
    assert "/cancel" in reply.text
    assert "from 1 to 50 bottles" in reply.text  # the step's own help, with its params
    assert reply.text.endswith("How many 19 l bottles should we bring? Send a number, e.g. 2.")
    assert result.effects == ()


def test_unknown_command_reasks(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Hello")
    result = chat.say("/foo")
    assert result.state is not None
    assert result.state.step == "WAITING_ADDRESS"
    assert result.state.data == {}
    assert "Unknown command" in result.replies[0].text


def test_empty_message_reasks(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Hello")
    result = chat.say("   ")
    assert result.state is not None
    assert result.state.step == "WAITING_ADDRESS"
    assert "reply with text" in result.replies[0].text


def test_idle_dialog_starts_over(water: Flow) -> None:
    options = DialogOptions(idle_timeout=3600)
    chat = Chat(water, options)
    chat.say("Привет")
    chat.say("ул. Токтогула 1")
    kept = chat.say("0555123456", after=3600)  # exactly the timeout: still alive
    assert kept.state is not None
    assert kept.state.step == "WAITING_QUANTITY"
    result = chat.say("5", after=3601)
    assert result.state is not None
    assert result.state.step == "WAITING_ADDRESS"
    assert result.state.data == {}
    assert result.state.message_count == 1
    assert "Здравствуйте!" in result.replies[0].text
    (ended,) = result.effects
    assert ended.outcome == "abandoned"
    assert ended.last_step == "WAITING_QUANTITY"
    assert ended.message_count == 3


def test_idle_dialog_then_cancel(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    result = chat.say("/cancel", after=OPTIONS.idle_timeout + 1)
    assert result.state is None
    assert [e.outcome for e in result.effects if isinstance(e, DialogEnded)] == ["abandoned"]


@pytest.mark.parametrize(
    ("text", "options", "language"),
    [
        ("Здравствуйте", OPTIONS, "ru"),
        ("салам", OPTIONS, "ru"),
        ("Hello", OPTIONS, "en"),
        ("/start", OPTIONS, "ru"),
        ("123", OPTIONS, "ru"),
        ("👋", OPTIONS, "ru"),
        ("/start", DialogOptions(default_language="en"), "en"),
        ("Hello", DialogOptions(detect_language=False), "ru"),
        ("Привет", DialogOptions(detect_language=False, default_language="en"), "en"),
        ("Bonjour", DialogOptions(default_language="fr"), "en"),
        ("123", DialogOptions(default_language="fr"), "ru"),  # not in the flow: its first
    ],
)
def test_language_of_a_new_dialog(
    water: Flow, text: str, options: DialogOptions, language: str
) -> None:
    result = step(water, None, text, T0, options=options)
    assert result.state is not None
    assert result.state.language == language


def test_language_stays_for_the_whole_dialog(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Hello")
    result = chat.say("ул. Токтогула 1")
    assert result.state is not None
    assert result.state.language == "en"
    assert "phone number" in result.replies[0].text


def test_state_from_an_older_flow_starts_over(water: Flow) -> None:
    old = DialogState("WAITING_EMAIL", "ru", {}, T0, T0, 4)
    result = step(water, old, "Привет", T0 + 5, options=OPTIONS)
    assert result.state is not None
    assert result.state.step == "WAITING_ADDRESS"
    assert result.effects == (DialogEnded("abandoned", "WAITING_EMAIL", 4, T0, T0 + 5),)


def test_state_json_round_trip() -> None:
    state = DialogState(
        step="WAITING_QUANTITY",
        language="en",
        data={"address": 'ул. {x} "q" 5', "phone": "+996555123456", "n": 3, "skip": None},
        started_at=T0,
        updated_at=T0 + 12.5,
        message_count=4,
    )
    raw = state.to_json()
    assert isinstance(raw, bytes)
    assert DialogState.from_json(raw) == state
    assert DialogState.from_json(raw.decode()) == state


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"step": "X"}',
        b'{"step": 1, "language": "ru", "data": {}, '
        b'"started_at": 0, "updated_at": 0, "message_count": 1}',
    ],
)
def test_state_from_bad_json_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="dialog state"):
        DialogState.from_json(raw)


def test_render_buttons_as_text() -> None:
    assert (
        render_buttons_as_text(Reply("Всё верно?", ("Да", "Нет"))) == "Всё верно?\n\n1. Да\n2. Нет"
    )
    assert render_buttons_as_text(Reply("Hi")) == "Hi"


def test_error_reply() -> None:
    assert "повторите" in error_reply("ru").text
    assert "repeat" in error_reply("en").text
    assert error_reply("fr") == error_reply("ru")


def test_step_is_pure(water: Flow) -> None:
    state = DialogState("WAITING_ADDRESS", "ru", {}, T0, T0, 1)
    first = step(water, state, "ул. Токтогула 1", T0 + 1, options=OPTIONS)
    second = step(water, state, "ул. Токтогула 1", T0 + 1, options=OPTIONS)
    assert first == second
    assert state.data == {}


PRINTING_LIKE = """
name: printing_like
languages: [ru, en]
start: SERVICE
texts:
  greeting: {ru: Привет, en: Hi}
  help: {ru: Помощь, en: Help}
  cancelled: {ru: Отменено, en: Cancelled}
  empty: {ru: Текстом, en: Text please}
  unknown_command: {ru: Нет такой, en: No such}
steps:
  SERVICE:
    prompt: {ru: "Что печатаем?", en: "What shall we print?"}
    validator: catalog_choice
    params:
      items:
        - {id: fdm, names: [пластик, plastic]}
        - {id: sla, names: [смола, resin]}
    buttons: {ru: [FDM, Фотополимер], en: [FDM, Resin]}
    field: service
    errors: {unknown_choice: {ru: Выберите из списка, en: Pick one from the list}}
    next: {fdm: EMAIL, "*": EMAIL}
  EMAIL:
    prompt: {ru: "Почта?", en: "E-mail?"}
    validator: email
    field: email
    errors: {invalid: {ru: Не похоже на почту, en: Not an e-mail}}
    next: PHONE
  PHONE:
    prompt: {ru: "Телефон (или «пропустить»)?", en: 'Phone (or "skip")?'}
    validator: phone
    field: phone
    skip: {ru: [пропустить, нет телефона], en: [skip]}
    buttons: {ru: [Пропустить], en: [Skip]}
    errors: {default: {ru: Не номер, en: Not a phone number}}
    next: CONFIRM
  CONFIRM:
    prompt:
      ru: "{service}, {email}, {phone}. Верно?"
      en: "{service}, {email}, {phone}. Correct?"
    validator: yes_no
    buttons: {ru: [Да, Нет], en: ["Yes", "No"]}
    errors: {unclear: {ru: "Да или нет?", en: "Yes or no?"}}
    next: {"yes": DONE, "no": SERVICE}
  DONE:
    end: completed
    text: {ru: "Заявка {order_id}", en: "Request {order_id}"}
"""


@pytest.fixture
def printing_like(tmp_path: Path) -> Flow:
    path = tmp_path / "printing_like.yaml"
    path.write_text(PRINTING_LIKE, encoding="utf-8")
    return load_flow(path)


def test_another_flow_runs_without_engine_changes(printing_like: Flow) -> None:
    chat = Chat(printing_like)
    chat.say("Hello")
    assert chat.text("metal") == "Pick one from the list"
    assert chat.text("2") == "E-mail?"  # button number -> "Resin" -> sla
    assert chat.text("me at example") == "Not an e-mail"
    assert chat.text("Me@Example.com") == 'Phone (or "skip")?'
    summary = chat.say("1")  # the only button: Skip
    # A choice shows its button label, not the stored id.
    assert summary.replies[0].text == "Resin, Me@example.com, —. Correct?"
    again = chat.say("no")  # branches back to the first step, keeping the data
    assert again.state is not None
    assert again.state.step == "SERVICE"
    chat.say("plastic")
    chat.say("me@example.com")
    chat.say("0555 123 456")
    done = chat.say("yes")
    order = done.effects[0]
    assert isinstance(order, CreateOrder)
    assert order.address is None
    assert order.quantity is None
    assert order.phone == "+996555123456"
    assert order.data == {"service": "fdm", "email": "me@example.com", "phone": "+996555123456"}
    assert done.replies[0].text == "Request {order_id}"


def test_skip_word_leaves_the_field_empty(printing_like: Flow) -> None:
    chat = Chat(printing_like)
    chat.say("Привет")
    chat.say("смола")
    chat.say("me@example.com")
    result = chat.say("Пропустить")
    assert result.state is not None
    assert result.state.data["phone"] is None
    assert result.state.step == "CONFIRM"
