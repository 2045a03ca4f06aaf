"""Whole conversations through the pure engine with customers who write like people (issue 16):
everything in one message, corrections, questions, typos and the wrong keyboard layout,
Kyrgyz, buttons of older messages, commands without a slash."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from orderbot.dialog.engine import step
from orderbot.dialog.flow import Flow
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import (
    AskOperator,
    CreateOrder,
    DialogEnded,
    DialogOptions,
    DialogState,
    ReceivedFile,
    StepResult,
)
from orderbot.messages import Attachment

T0 = 1_700_000_000.0
OPTIONS = DialogOptions()


@pytest.fixture(scope="module")
def water() -> Flow:
    return load_flow("water")


@pytest.fixture(scope="module")
def printing() -> Flow:
    return load_flow("printing")


class Chat:
    def __init__(self, flow: Flow, options: DialogOptions = OPTIONS, hint: str | None = None):
        self.flow = flow
        self.options = options
        self.hint = hint
        self.state: DialogState | None = None
        self.now = T0

    def say(
        self, text: str, *, after: float = 1.0, files: Sequence[Attachment | ReceivedFile] = ()
    ) -> StepResult:
        self.now += after
        result = step(
            self.flow,
            self.state,
            text,
            self.now,
            options=self.options,
            attachments=files,
            language_hint=self.hint,
        )
        if result.state is not None:
            assert DialogState.from_json(result.state.to_json()) == result.state
        self.state = result.state
        return result

    def text(self, text: str, **kwargs: object) -> str:
        return "\n---\n".join(r.text for r in self.say(text, **kwargs).replies)  # type: ignore[arg-type]

    @property
    def at(self) -> str | None:
        return None if self.state is None else self.state.step

    @property
    def data(self) -> dict[str, object]:
        assert self.state is not None
        return self.state.data


def order_of(result: StepResult) -> CreateOrder:
    (order,) = [e for e in result.effects if isinstance(e, CreateOrder)]
    return order


def test_everything_in_the_first_message_goes_straight_to_the_summary(water: Flow) -> None:
    chat = Chat(water)
    result = chat.say("Добрый вечер, 3 бутыли на Манаса 40, кв 12, номер 0770 11 22 33")
    greeting, summary = result.replies
    assert "Здравствуйте!" in greeting.text
    assert "Адрес: Манаса 40, кв 12\n" in summary.text
    assert "Телефон: +996770112233" in summary.text
    assert "Бутылей: 3" in summary.text
    assert summary.buttons == ("Да", "Нет")
    assert chat.at == "WAITING_CONFIRMATION"
    assert result.effects == ()  # the summary shows every detail before an order exists
    order = order_of(chat.say("да"))
    assert (order.address, order.phone, order.quantity) == ("Манаса 40, кв 12", "+996770112233", 3)


def test_everything_at_the_address_step(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Здравствуйте")
    reply = chat.text("Добрый вечер, 3 бутыли на Манаса 40, кв 12, номер 0770 11 22 33")
    assert "Записал: телефон — +996770112233, количество — 3." in reply
    assert chat.at == "WAITING_CONFIRMATION"
    assert chat.data == {"address": "Манаса 40, кв 12", "phone": "+996770112233", "quantity": 3}


def test_labelled_lines(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    chat.say("Адрес: Чуй 100, кв 5\nТелефон: 0555 123 456\nКоличество: 2")
    assert chat.at == "WAITING_CONFIRMATION"
    assert chat.data == {"address": "Чуй 100, кв 5", "phone": "+996555123456", "quantity": 2}


def test_a_detail_given_early_is_not_asked_again(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    reply = chat.text("0555 123 456")  # the phone, at the address question
    assert "Записал: телефон — +996555123456." in reply
    assert "адрес доставки" in reply
    assert chat.at == "WAITING_ADDRESS"
    assert "Сколько бутылей" in chat.text("Манаса 40")  # the phone is not asked again
    assert "Бутылей: 2" in chat.text("2")


def test_only_a_greeting_at_the_address_step_is_not_an_address(water: Flow) -> None:
    chat = Chat(water)
    chat.say("/start")
    result = chat.say("Добрый день!")
    assert chat.at == "WAITING_ADDRESS"
    assert chat.data == {}
    assert "адрес доставки" in result.replies[0].text


def test_a_question_is_answered_and_never_stored(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    result = chat.say("а доставка платная?")
    assert chat.data == {}
    assert chat.at == "WAITING_ADDRESS"
    (reply,) = result.replies
    assert reply.text.startswith("Доставляем по всему Бишкеку бесплатно")
    assert reply.text.endswith("адрес доставки: улица, дом, квартира.")
    assert result.effects == ()


def test_an_unknown_question_goes_to_the_operators_and_the_dialog_goes_on(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    chat.say("Манаса 40")
    result = chat.say("а можно привезти в офис после обеда?")
    assert chat.at == "WAITING_PHONE"
    assert chat.data == {"address": "Манаса 40"}
    assert "оператору" in result.replies[0].text
    assert "номер телефона" in result.replies[0].text
    assert result.effects == (
        AskOperator("а можно привезти в офис после обеда?", "WAITING_PHONE", "ru"),
    )


def test_a_question_as_the_first_message(water: Flow) -> None:
    result = Chat(water).say("Сколько стоит бутыль?")
    greeting, answer = result.replies
    assert "Здравствуйте!" in greeting.text
    assert answer.text.startswith("Бутыль 19 л — 150 сом")
    assert result.state is not None and result.state.data == {}


def test_correction_at_the_quantity_step(water: Flow) -> None:
    chat = Chat(water)
    for text in ("Привет", "Манаса 40", "0770 11 22 33"):
        chat.say(text)
    reply = chat.text("ой, номер другой: 0550 99 88 77")
    assert "Исправил: телефон — +996550998877." in reply
    assert "Сколько бутылей" in reply
    assert chat.at == "WAITING_QUANTITY"
    assert chat.data["phone"] == "+996550998877"
    assert "Телефон: +996550998877" in chat.text("3")


def test_corrections_at_the_summary(water: Flow) -> None:
    chat = Chat(water)
    chat.say("3 бутыли на Манаса 40, 0770 11 22 33")
    reply = chat.text("нет, давайте 4")
    assert "Исправил: количество — 4." in reply
    assert "Бутылей: 4" in reply
    assert chat.at == "WAITING_CONFIRMATION"
    assert "Бутылей: 5" in chat.text("не 4, а 5")
    assert "Адрес: Чуй 40" in chat.text("не Манаса, а Чуй")
    assert "Адрес: Ахунбаева 5" in chat.text("поменяйте адрес на Ахунбаева 5")
    reply = chat.text("адрес другой")
    assert "изменим: адрес" in reply
    assert chat.at == "WAITING_ADDRESS"
    summary = chat.text("Жибек Жолу 1")
    assert "Адрес: Жибек Жолу 1" in summary
    assert "Бутылей: 5" in summary
    assert chat.at == "WAITING_CONFIRMATION"
    order = order_of(chat.say("да"))
    assert (order.address, order.quantity) == ("Жибек Жолу 1", 5)


def test_bare_no_at_the_summary_still_declines(water: Flow) -> None:
    chat = Chat(water)
    chat.say("3 бутыли на Манаса 40, 0770 11 22 33")
    result = chat.say("нет")
    assert result.state is None
    assert [e.outcome for e in result.effects if isinstance(e, DialogEnded)] == ["cancelled"]
    assert not [e for e in result.effects if isinstance(e, CreateOrder)]


@pytest.mark.parametrize("typed", ["lf", "Да)))", "да!!!", "даааа 👍", "конешно", "ооба"])
def test_yes_as_people_type_it(water: Flow, typed: str) -> None:
    chat = Chat(water)
    chat.say("3 бутыли на Манаса 40, 0770 11 22 33")
    assert order_of(chat.say(typed)).quantity == 3


def test_wrong_layout_at_a_catalog_summary(printing: Flow) -> None:
    chat = Chat(printing)
    for text in ("Привет", "1", "Иван", "ivan@example.com", "Пропустить"):
        chat.say(text)
    chat.say("", files=[ReceivedFile("a.stl", checksum="c", size=10, format="stl", path="p")])
    for text in ("Продолжить", "PLA", "0.2 мм", "15 %", "Самовывоз"):
        chat.say(text)
    assert chat.at == "SUMMARY"
    assert order_of(chat.say("gjlndthlf.")).data["name"] == "Иван"


def test_printing_details_in_one_message_skip_their_questions(printing: Flow) -> None:
    chat = Chat(printing)
    chat.say("Привет")
    chat.say("1")
    reply = chat.text("Иван, ivan@example.com, 0555 123 456")
    assert chat.at == "FILES"
    assert chat.data["name"] == "Иван"
    assert chat.data["email"] == "ivan@example.com"
    assert chat.data["phone"] == "+996555123456"
    assert "Записал" in reply


def test_a_button_of_an_older_message_is_stale(printing: Flow) -> None:
    chat = Chat(printing)
    for text in ("Привет", "1", "Иван"):
        chat.say(text)
    assert chat.at == "EMAIL"
    reply = chat.text("✅ Подтвердить")
    assert "от предыдущего сообщения" in reply
    assert "e-mail" in reply
    assert chat.at == "EMAIL"
    assert "email" not in chat.data


@pytest.mark.parametrize(
    ("word", "expected"), [("help", "помогаю"), ("помощь", "помогаю"), ("меню", "Привозим")]
)
def test_command_words_without_a_slash_are_not_an_address(
    water: Flow, word: str, expected: str
) -> None:
    chat = Chat(water)
    chat.say("Привет")
    assert expected in chat.text(word)
    assert chat.at == "WAITING_ADDRESS"
    assert chat.data == {}


def test_start_and_cancel_words(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    chat.say("Манаса 40")
    assert "Здравствуйте!" in chat.text("start")
    assert chat.data == {}
    assert "отменён" in chat.text("jnvtyf")  # "отмена" with the Latin layout
    assert chat.state is None


def test_the_first_message_after_cancel_is_read(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    chat.say("/cancel")
    result = chat.say("Манаса 40, 0555 123 456")
    assert "Здравствуйте!" in result.replies[0].text
    assert chat.at == "WAITING_QUANTITY"
    assert chat.data == {"address": "Манаса 40", "phone": "+996555123456"}


def test_a_message_after_the_idle_timeout_is_read(water: Flow) -> None:
    chat = Chat(water, DialogOptions(idle_timeout=3600))
    chat.say("Привет")
    chat.say("Манаса 40")
    result = chat.say("2 бутыли на Чуй 100, 0555 123 456", after=7200)
    assert [e.outcome for e in result.effects if isinstance(e, DialogEnded)] == ["abandoned"]
    assert chat.at == "WAITING_CONFIRMATION"
    assert chat.data == {"address": "Чуй 100", "phone": "+996555123456", "quantity": 2}


def test_a_photo_caption_is_not_the_address(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Привет")
    photo = Attachment(url="https://x/p.jpg", name="p.jpg", kind="photo")
    reply = chat.text("вот наш подъезд", files=[photo])
    assert "нужен текстом" in reply
    assert chat.at == "WAITING_ADDRESS"
    assert chat.data == {}


@pytest.mark.parametrize(
    ("text", "hint", "language"),
    [
        ("/start", "en", "en"),
        ("/start", "en-US", "en"),
        ("/start", "ky", "ky"),
        ("/start", "de", "ru"),
        ("/start", None, "ru"),
        ("Привет", "en", "ru"),  # what the customer writes wins over the app's setting
        ("Саламатсызбы", "ru", "ky"),
        ("Hello", "ru", "en"),
    ],
)
def test_the_language_of_a_new_dialog_with_the_apps_language(
    water: Flow, text: str, hint: str | None, language: str
) -> None:
    result = Chat(water, hint=hint).say(text)
    assert result.state is not None
    assert result.state.language == language


def test_a_conversation_in_kyrgyz(water: Flow) -> None:
    chat = Chat(water)
    first = chat.text("Саламатсызбы, алты бөтөлкө керек")
    assert "Саламатсызбы!" in first
    assert "Жазып алдым: саны — 6." in first
    assert "Жеткирүү дарегин" in first
    assert "телефон номериңиз" in chat.text("Чүй 100, 12-батир")
    summary = chat.say("0555 123 456").replies[0]
    assert "Бөтөлкө: 6" in summary.text
    assert summary.buttons == ("Ооба", "Жок")
    assert "19 литрлик бөтөлкө" in chat.text("канча турат?")
    order = order_of(chat.say("ооба"))
    assert (order.language, order.quantity) == ("ky", 6)


@pytest.mark.parametrize(
    ("word", "language", "prompt"),
    [
        ("кыргызча", "ky", "Жеткирүү дарегин"),
        ("/ky", "ky", "Жеткирүү дарегин"),
        ("English", "en", "delivery address"),
        ("/en", "en", "delivery address"),
        ("по-русски", "ru", "адрес доставки"),
    ],
)
def test_switching_language(water: Flow, word: str, language: str, prompt: str) -> None:
    chat = Chat(water, hint="en" if language == "ru" else None)
    chat.say("/start")
    reply = chat.text(word)
    assert chat.state is not None and chat.state.language == language
    assert prompt in reply
    assert chat.data == {}


def test_changing_a_detail_at_the_water_summary_by_words(water: Flow) -> None:
    chat = Chat(water)
    chat.say("3 бутыли на Манаса 40, 0770 11 22 33")
    hint = chat.say("изменить").replies[0]
    assert "«адрес …», «телефон …», «количество …»" in hint.text
    assert hint.buttons == ("Да", "Нет")  # still the summary: "1" keeps meaning "Да"
    assert chat.at == "WAITING_CONFIRMATION"
    assert "Адрес: Чуй 5" in chat.text("адрес Чуй 5")
    assert "Телефон: +996555123456" in chat.text("телефон 0555 123 456")
    assert "Бутылей: 4" in chat.text("количество 4")
    assert "изменим: адрес" in chat.text("адрес")
    assert chat.at == "WAITING_ADDRESS"
    assert "Адрес: Жибек Жолу 1" in chat.text("Жибек Жолу 1")
    order = order_of(chat.say("1"))
    assert (order.address, order.phone, order.quantity) == ("Жибек Жолу 1", "+996555123456", 4)
