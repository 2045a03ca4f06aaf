"""Reading every detail of a message (orderbot.dialog.understanding), table-driven, in
Russian, English and Kyrgyz, on both shipped flows."""

from __future__ import annotations

from typing import Any

import pytest

from orderbot.dialog.flow import Flow
from orderbot.dialog.layout import other_layout
from orderbot.dialog.loader import load_flow
from orderbot.dialog.understanding import clean_rest, faq_answer, is_question, read
from orderbot.dialog.validators.base import Invalid, Valid
from orderbot.dialog.validators.choices import CatalogItem, parse_catalog_choice, parse_yes_no
from orderbot.dialog.validators.quantities import parse_integer
from orderbot.dialog.wording import close_word

ADDRESS, PHONE, QUANTITY, CONFIRM = (
    "WAITING_ADDRESS",
    "WAITING_PHONE",
    "WAITING_QUANTITY",
    "WAITING_CONFIRMATION",
)
GIVEN = {"address": "Манаса 40", "phone": "+996770112233", "quantity": 3}


@pytest.fixture(scope="module")
def water() -> Flow:
    return load_flow("water")


@pytest.fixture(scope="module")
def printing() -> Flow:
    return load_flow("printing")


# (step, answers so far, message, fields it gives besides the step's own, the step's own answer)
WATER_CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], str | None]] = [
    # everything at once
    (ADDRESS, {}, "Добрый вечер, 3 бутыли на Манаса 40, кв 12, номер 0770 11 22 33",
     {"phone": "+996770112233", "quantity": 3}, "Манаса 40, кв 12"),
    (ADDRESS, {}, "Здравствуйте! Манаса 40, кв 12. Тел 0770112233, 2 бутыли пожалуйста",
     {"phone": "+996770112233", "quantity": 2}, "Манаса 40, кв 12."),
    (ADDRESS, {}, "Hello, 2 bottles to 120 Kievskaya St, apt 5, phone +996 555 123 456",
     {"phone": "+996555123456", "quantity": 2}, "120 Kievskaya St, apt 5"),
    (ADDRESS, {}, "Саламатсызбы, алты бөтөлкө, Чүй 100, 0555 123 456",
     {"phone": "+996555123456", "quantity": 6}, "Чүй 100"),
    (ADDRESS, {}, "Адрес: Манаса 40\nТелефон: 0555 123 456\nКоличество: 2",
     {"phone": "+996555123456", "quantity": 2}, "Манаса 40"),
    (ADDRESS, {}, "Address: 5 Chui Ave; phone: 0555123456; quantity: 4",
     {"phone": "+996555123456", "quantity": 4}, "5 Chui Ave"),
    (ADDRESS, {}, "мкр Джал 23, дом 5 — три бутыли", {"quantity": 3}, "мкр Джал 23, дом 5"),
    (ADDRESS, {}, "двадцать пять бутылей на Ахунбаева 12", {"quantity": 25}, "Ахунбаева 12"),
    (ADDRESS, {}, "Чүй 100, төрт бөтөлкө", {"quantity": 4}, "Чүй 100"),
    (ADDRESS, {}, "Манаса 40, e-mail a@b.kg", {}, "Манаса 40"),
    # one detail, the address as it is
    (ADDRESS, {}, "ул. Киевская 120, кв. 5", {}, "ул. Киевская 120, кв. 5"),
    (ADDRESS, {}, "  ул. Киевская   120, кв. 5 ", {}, "ул. Киевская   120, кв. 5"),
    (ADDRESS, {}, "ул. {phone} {order_id} {0} %s 5", {}, "ул. {phone} {order_id} {0} %s 5"),
    (ADDRESS, {}, "ул. Отмена 5", {}, "ул. Отмена 5"),
    (ADDRESS, {}, "120 Kievskaya St", {}, "120 Kievskaya St"),
    (ADDRESS, {}, "возле ЦУМа", {}, "возле ЦУМа"),
    (ADDRESS, {}, "ул", {}, "ул"),
    (ADDRESS, {}, "12345 67", {}, "12345 67"),
    (ADDRESS, {}, "Манаса 40 кв 12 подъезд 3 этаж 4", {}, "Манаса 40 кв 12 подъезд 3 этаж 4"),
    # greetings and wishes only: nothing to store
    (ADDRESS, {}, "Здравствуйте", {}, None),
    (ADDRESS, {}, "Добрый день!", {}, None),
    (ADDRESS, {}, "Hi, I need water", {}, None),
    (ADDRESS, {}, "хочу заказать воду", {}, None),
    (ADDRESS, {}, "Саламатсызбы, суу керек", {}, None),
    # only another detail at the address step
    (ADDRESS, {}, "0555 123 456", {"phone": "+996555123456"}, None),
    (ADDRESS, {}, "мой номер +996 700 123 456", {"phone": "+996700123456"}, None),
    (ADDRESS, {}, "5 бутылей", {"quantity": 5}, None),
    # two different phones: which one? asked, not guessed
    (ADDRESS, {}, "Манаса 40, 0555 111 222 или 0777 333 444", {}, "Манаса 40"),
    # the phone step
    (PHONE, {"address": "Манаса 40"}, "мой номер 0555 123 456", {}, "0555 123 456"),
    (PHONE, {"address": "Манаса 40"}, "+996 555 123 456", {}, "+996 555 123 456"),
    (PHONE, {"address": "Манаса 40"}, "0555 123 456, и 3 бутыли", {"quantity": 3},
     "0555 123 456"),
    (PHONE, {"address": "Манаса 40"}, "Телефон: 0700 12 34 56", {}, "0700 12 34 56"),
    (PHONE, {"address": "Манаса 40"}, "123", {}, None),
    # the quantity step
    (QUANTITY, GIVEN, "4", {}, "4"),
    (QUANTITY, GIVEN, "1.5", {}, "1.5"),
    (QUANTITY, GIVEN, "2 или 3", {}, "2 или 3"),
    (QUANTITY, GIVEN, "три бутыли", {}, "три бутыли"),
    (QUANTITY, GIVEN, "алты бөтөлкө", {}, "алты бөтөлкө"),
    (QUANTITY, GIVEN, "много", {}, None),
    (QUANTITY, GIVEN, "ой, номер другой: 0550 99 88 77", {"phone": "+996550998877"}, None),
    (QUANTITY, GIVEN, "номер 0550998877, и давайте 4", {"phone": "+996550998877"},
     "4"),
    (QUANTITY, GIVEN, "адрес не тот: Чуй 100", {"address": "Чуй 100"}, None),
    (QUANTITY, GIVEN, "change the address to 5 Chui Ave", {"address": "5 Chui Ave"}, None),
    # the summary
    (CONFIRM, GIVEN, "нет, давайте 4", {"quantity": 4}, None),
    (CONFIRM, GIVEN, "не 3, а 5", {"quantity": 5}, None),
    (CONFIRM, GIVEN, "not 3 but 6", {"quantity": 6}, None),
    (CONFIRM, GIVEN, "не Манаса, а Чуй", {"address": "Чуй 40"}, None),
    (CONFIRM, GIVEN, "измените телефон на 0555 123 456", {"phone": "+996555123456"}, None),
    (CONFIRM, GIVEN, "поменяйте адрес на Ахунбаева 5", {"address": "Ахунбаева 5"}, None),
    (CONFIRM, GIVEN, "ой, 7 бутылей", {"quantity": 7}, None),
    (CONFIRM, GIVEN, "4", {"quantity": 4}, None),
    (CONFIRM, GIVEN, "нет", {}, None),
    (CONFIRM, GIVEN, "да", {}, None),
    (CONFIRM, GIVEN, "не знаю", {}, None),
    (CONFIRM, GIVEN, "number is wrong: 0555 123 456", {"phone": "+996555123456"}, None),
    # too many bottles outside the quantity step: not stored, asked at its step
    (ADDRESS, {}, "100 бутылей на Манаса 40", {}, "Манаса 40"),
    # a house number, a phone, then the count: each its own
    (ADDRESS, {}, "Чуй 100 0770 11 22 33 4 бутыли", {"phone": "+996770112233", "quantity": 4},
     "Чуй 100"),
    (ADDRESS, {}, "Манаса 40 0555123456", {"phone": "+996555123456"}, "Манаса 40"),
    (ADDRESS, {}, "00996 555 123 456, Манаса 40", {"phone": "+996555123456"}, "Манаса 40"),
]  # fmt: skip


@pytest.mark.parametrize(("at", "data", "text", "values", "answer"), WATER_CASES)
def test_water_messages(
    water: Flow, at: str, data: dict[str, Any], text: str, values: dict[str, Any], answer: str
) -> None:
    reading = read(water, water.steps[at], data, text, region="KG", language="ru")
    assert dict(reading.values) == values
    assert reading.answer == answer


@pytest.mark.parametrize(
    ("text", "field"),
    [("адрес другой", "address"), ("номер не тот", "phone"), ("the address is wrong", "address"),
     ("address is wrong", "address"), ("количество другое", "quantity")],
)  # fmt: skip
def test_a_change_without_a_value_names_the_field(water: Flow, text: str, field: str) -> None:
    reading = read(water, water.steps[CONFIRM], GIVEN, text, region="KG", language="ru")
    assert reading.change == field
    assert dict(reading.values) == {}


@pytest.mark.parametrize(
    ("text", "first", "answer"),
    [
        ("Манаса 40", True, "Манаса 40"),
        ("ул. Токтогула 1", True, "ул. Токтогула 1"),
        ("мкр Асанбай", True, "мкр Асанбай"),
        ("Вы работаете сегодня", True, None),
        ("ещё воды", True, None),
        ("123", True, None),
        ("Bonjour", True, None),
        ("возле ЦУМа", True, None),  # a first message this vague is not an address yet
        ("возле ЦУМа", False, "возле ЦУМа"),  # ...but it is an answer to the address question
    ],
)
def test_a_first_message_is_an_address_only_if_it_looks_like_one(
    water: Flow, text: str, first: bool, answer: str | None
) -> None:
    reading = read(water, water.steps[ADDRESS], {}, text, region="KG", language="ru", first=first)
    assert reading.answer == answer


def test_a_photo_caption_is_not_an_address(water: Flow) -> None:
    caption = "вот наш подъезд, Манаса 40"
    reading = read(water, water.steps[ADDRESS], {}, caption, region="KG", language="ru", media=True)
    assert reading.answer is None
    assert dict(reading.values) == {}


PRINTING_CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], str | None]] = [
    ("NAME", {"service": "fdm_standard"}, "Иван, ivan@example.com, 0555 123 456",
     {"email": "ivan@example.com", "phone": "+996555123456"}, "Иван"),
    ("NAME", {"service": "fdm_standard"}, "John Smith", {}, "John Smith"),
    ("NAME", {"service": "fdm_standard"}, "Hello there", {}, "there"),
    ("EMAIL", {"service": "fdm_standard", "name": "Иван"}, "моя почта Anna@Example.com",
     {}, "Anna@Example.com"),
    ("EMAIL", {"service": "fdm_standard", "name": "Иван"}, "ivan@example.com и 0700 123 456",
     {"phone": "+996700123456"}, "ivan@example.com"),
    ("PHONE", {"service": "fdm_standard", "name": "Иван", "email": "i@x.kg"}, "0555 123 456",
     {}, "0555 123 456"),
]  # fmt: skip


@pytest.mark.parametrize(("at", "data", "text", "values", "answer"), PRINTING_CASES)
def test_printing_messages(
    printing: Flow,
    at: str,
    data: dict[str, Any],
    text: str,
    values: dict[str, Any],
    answer: str | None,
) -> None:
    reading = read(printing, printing.steps[at], data, text, region="KG", language="ru")
    assert dict(reading.values) == values
    assert reading.answer == answer


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("а доставка платная?", True),
        ("Сколько стоит бутыль", True),
        ("сколько стоит", True),
        ("Когда привезёте", True),
        ("где вы находитесь", True),
        ("а можно оплатить картой", True),
        ("есть ли доставка в Аламедин", True),
        ("вы доставляете в воскресенье", True),
        ("подскажите цену", True),
        ("how much is a bottle", True),
        ("do you deliver on sunday", True),
        ("What time do you close", True),
        ("канча турат", True),
        ("качан алып келесиз", True),
        ("жеткирүү барбы?", True),
        ("??", False),
        ("Манаса 40", False),
        ("как обычно", False),
        ("вы", False),
        ("да", False),
        ("Yes", False),
        ("Это ул. Киевская 5", False),
        ("ул. Кто-то 5", False),
        ("do it", False),
        ("0555 123 456", False),
        ("где-то возле ЦУМа, Чуй 100", False),
        ("Как-нибудь после обеда", False),
    ],
)
def test_questions(text: str, question: bool) -> None:
    assert is_question(text) is question


@pytest.mark.parametrize(
    ("text", "language", "start"),
    [
        ("а доставка платная?", "ru", "Доставляем по всему Бишкеку"),
        ("сколько стоит бутыль?", "ru", "Бутыль 19 л — 150 сом"),
        ("how much is it?", "en", "A 19 l bottle costs"),
        ("можно картой оплатить?", "ru", "Оплата курьеру"),
        ("do you take cash?", "en", "You pay the courier"),
        ("канча турат?", "ky", "19 литрлик бөтөлкө"),
        ("а собаку можно привести?", "ru", None),
        ("what is the meaning of life?", "en", None),
    ],
)
def test_faq(water: Flow, text: str, language: str, start: str | None) -> None:
    answer = faq_answer(water, text, language)
    if start is None:
        assert answer is None
    else:
        assert answer is not None and answer.startswith(start)


@pytest.mark.parametrize(
    ("text", "rest"),
    [
        ("Добрый вечер,  на Манаса 40, кв 12, номер ", "Манаса 40, кв 12"),
        ("ул. Ленина 5", "ул. Ленина 5"),
        ("привет", ""),
        ("Здравствуйте, хочу заказать воду", ""),
        ("please deliver to 5 Main St", "5 Main St"),
        ("ещё", "ещё"),
    ],
)
def test_clean_rest(text: str, rest: str) -> None:
    assert clean_rest(text) == rest


@pytest.mark.parametrize(
    ("typed", "converted"),
    [
        ("gjlndthlf.", "подтвердаю"),  # the example, "ж" left out
        ("lf", "да"),
        ("ytn", "нет"),
        ("jnvtyf", "отмена"),
        ("нуы", "yes"),
        ("тщ", "no"),
        ("Manasa 40 кв", None),  # mixed: not one wrong layout
        ("123", None),
    ],
)
def test_other_layout(typed: str, converted: str | None) -> None:
    assert other_layout(typed) == converted


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("да)))", True), ("Да!!!", True), ("даааа", True), ("ДА 👍", True), ("да 😊", True),
        ("конешно", True), ("канешно", True), ("подтвердаю", True), ("ок)", True),
        ("yess", True), ("yes pls", True), ("ооба", True), ("Ооба, туура", True),
        ("макул", True), ("жарайт", True), ("нееет", False), ("нет!!!", False),
        ("жок", False), ("туура эмес", False), ("no way!!", False), ("nope 🙅", False),
    ],
)  # fmt: skip
def test_yes_no_with_chat_habits(text: str, value: bool) -> None:
    assert parse_yes_no(text) == Valid(value)


@pytest.mark.parametrize("text", ["не знаю", "да, но адрес другой", "может", "дп", "lf"])
def test_yes_no_still_unclear(text: str) -> None:
    assert parse_yes_no(text) == Invalid("unclear")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("бир", 1), ("эки", 2), ("үч", 3), ("төрт", 4), ("беш", 5), ("алты бөтөлкө", 6),
        ("жети", 7), ("сегиз", 8), ("тогуз", 9), ("он", 10), ("он бир", 11), ("он беш", 15),
        ("жыйырма", 20), ("жыйырма эки", 22), ("отуз", 30), ("отуз үч", 33), ("кырк", 40),
        ("кырк тогуз", 49), ("элүү", 50), ("бешти", 5), ("үчтү алып келиңиз", 3),
        ("экини", 2),
    ],
)  # fmt: skip
def test_kyrgyz_number_words(text: str, value: int) -> None:
    assert parse_integer(text, minimum=1, maximum=50) == Valid(value)


def test_kyrgyz_half_is_not_a_whole_number() -> None:
    assert parse_integer("бир жарым") == Invalid("decimal")


@pytest.mark.parametrize(
    ("word", "near"),
    [("конешно", "конечно"), ("подтвердаю", "подтверждаю"), ("правилно", "правильно"),
     ("да", None), ("верно", None), ("сапог", None)],
)  # fmt: skip
def test_close_word(word: str, near: str | None) -> None:
    known = frozenset({"конечно", "подтверждаю", "правильно", "верно", "да"})
    assert close_word(word, known) == near


def test_a_mistyped_catalog_name_picks_the_one_close_item() -> None:
    items = [CatalogItem("confirm", ("подтверждаю",)), CatalogItem("edit", ("изменить",))]
    assert parse_catalog_choice("подтвердаю", items) == Valid("confirm")
    assert parse_catalog_choice("измнить", items) == Valid("edit")
    assert parse_catalog_choice("удалить", items) == Invalid("unknown_choice")


# More of what customers really write: (message at the address question of a new dialog,
# phone, quantity, address) with None where the message does not give it.
FIRST_MESSAGES: list[tuple[str, str | None, int | None, str | None]] = [
    ("Добрый день! Нужно 2 бутыли воды на ул. Ахунбаева 97, кв 14. Тел: 0555 11 22 33",
     "+996555112233", 2, "ул. Ахунбаева 97, кв 14."),
    ("здравствуйте 3 бутылки на Токтогула 125/1 кв 7 0700123456",
     "+996700123456", 3, "Токтогула 125/1 кв 7"),
    ("Привет, привезите 4 бутыли, мкр Джал 29, дом 3, кв 45", None, 4, "мкр Джал 29, дом 3, кв 45"),
    ("5 бутылей, Исанова 42", None, 5, "Исанова 42"),
    ("Воду 2 штуки на Боконбаева 110", None, 2, "Боконбаева 110"),
    ("Мне нужна вода. Адрес: Киевская 150, кв 3", None, None, "Киевская 150, кв 3"),
    ("Адрес: Московская 12\nНомер: 0777 654 321", "+996777654321", None, "Московская 12"),
    ("Телефон 0555 998 877, Манаса 101", "+996555998877", None, "Манаса 101"),
    ("0555998877", "+996555998877", None, None),
    ("+996 555 998 877 три бутыли", "+996555998877", 3, None),
    ("десять бутылей пожалуйста", None, 10, None),
    ("одну бутыль на Жибек Жолу 55", None, 1, "Жибек Жолу 55"),
    ("Hi! 3 bottles to 45 Chui Ave, apt 12, my number is 0555 123 456",
     "+996555123456", 3, "45 Chui Ave, apt 12"),
    ("Hello, I need two bottles", None, 2, None),
    ("good morning, water to 12 Manas St please", None, None, "12 Manas St"),
    ("Phone: +996 700 111 222\nAddress: 7 Kievskaya St", "+996700111222", None,
     "7 Kievskaya St"),
    ("Саламатсызбы, эки бөтөлкө суу керек, Ахунбаева 100", None, 2, "Ахунбаева 100"),
    ("Салам, беш бөтөлкө, 0555 111 222, Чүй 50", "+996555111222", 5, "Чүй 50"),
    ("Дарек: Манас көчөсү 12", None, None, "Манас көчөсү 12"),
    ("суу керек", None, None, None),
    ("Здравствуйте!", None, None, None),
    ("Добрый вечер", None, None, None),
    ("hello", None, None, None),
    ("Салам", None, None, None),
    ("хочу воду", None, None, None),
    ("ещё воды", None, None, None),
    ("Как заказать?", None, None, None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "phone", "quantity", "address"), FIRST_MESSAGES)
def test_first_messages(
    water: Flow, text: str, phone: str | None, quantity: int | None, address: str | None
) -> None:
    reading = read(water, water.steps[ADDRESS], {}, text, region="KG", language="ru", first=True)
    if "?" in text:
        assert is_question(text)
        return
    assert reading.values.get("phone") == phone
    assert reading.values.get("quantity") == quantity
    assert reading.answer == address


# Corrections at the summary of the water flow, given GIVEN: the new values.
SUMMARY_MESSAGES: list[tuple[str, dict[str, Any]]] = [
    ("нет, давайте 4", {"quantity": 4}),
    ("Нет, 5 бутылей", {"quantity": 5}),
    ("ой, не 3 а 2", {"quantity": 2}),
    ("лучше 6", {"quantity": 6}),
    ("давайте 7 бутылей", {"quantity": 7}),
    ("no, 4 bottles", {"quantity": 4}),
    ("make it 5 bottles", {"quantity": 5}),
    ("не 3, а 10", {"quantity": 10}),
    ("төрт бөтөлкө", {"quantity": 4}),
    ("жок, эки бөтөлкө", {"quantity": 2}),
    ("номер другой: 0700 123 456", {"phone": "+996700123456"}),
    ("телефон не тот, 0700 123 456", {"phone": "+996700123456"}),
    ("ой, номер 0700 123 456", {"phone": "+996700123456"}),
    ("change the phone to 0700 123 456", {"phone": "+996700123456"}),
    ("phone is wrong: +996 700 123 456", {"phone": "+996700123456"}),
    ("адрес другой: Чуй 5", {"address": "Чуй 5"}),
    ("адрес не тот — Чуй 5", {"address": "Чуй 5"}),
    ("измените адрес на Чуй 5", {"address": "Чуй 5"}),
    ("поменяй адрес на Чуй 5", {"address": "Чуй 5"}),
    ("change the address to 5 Chui Ave", {"address": "5 Chui Ave"}),
    ("адрес: Чуй 5", {"address": "Чуй 5"}),
    ("Адрес Чуй 5", {"address": "Чуй 5"}),
    ("дарек: Чүй 5", {"address": "Чүй 5"}),
    ("не Манаса, а Ахунбаева", {"address": "Ахунбаева 40"}),
    ("не 40, а 42", {"address": "Манаса 42"}),  # 40 is only in the address
    ("не 2, а 4", {}),  # no detail holds a 2: asked again
    ("адрес Чуй 5 и 4 бутыли", {"address": "Чуй 5", "quantity": 4}),
    ("Адрес: Чуй 5, 0700 123 456", {"address": "Чуй 5", "phone": "+996700123456"}),
    ("да", {}),
    ("нет", {}),
    ("ок", {}),
    ("не знаю", {}),
    ("всё верно", {}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "values"), SUMMARY_MESSAGES)
def test_summary_messages(water: Flow, text: str, values: dict[str, Any]) -> None:
    reading = read(water, water.steps[CONFIRM], GIVEN, text, region="KG", language="ru")
    assert dict(reading.values) == values


PRINTING_MORE: list[tuple[str, dict[str, Any], str, dict[str, Any], str | None]] = [
    # the name question
    ("NAME", {"service": "fdm_standard"}, "Айгуль", {}, "Айгуль"),
    ("NAME", {"service": "fdm_standard"}, "Меня зовут Айгуль", {}, "Меня зовут Айгуль"),
    ("NAME", {"service": "fdm_standard"}, "Айгуль, aigul@mail.kg", {"email": "aigul@mail.kg"},
     "Айгуль"),
    ("NAME", {"service": "fdm_standard"}, "Bakyt, +996 555 111 222",
     {"phone": "+996555111222"}, "Bakyt"),
    ("NAME", {"service": "fdm_standard"}, "Имя: Азамат\nПочта: az@x.kg\nТелефон: 0700 111 222",
     {"email": "az@x.kg", "phone": "+996700111222"}, "Азамат"),
    ("NAME", {"service": "fdm_standard"}, "Здравствуйте", {}, None),
    # the e-mail question
    ("EMAIL", {"service": "fdm_standard", "name": "Иван"}, "ivan@example.com", {},
     "ivan@example.com"),
    ("EMAIL", {"service": "fdm_standard", "name": "Иван"}, "почта: ivan@example.com", {},
     "ivan@example.com"),
    ("EMAIL", {"service": "fdm_standard", "name": "Иван"}, "my email is john@x.com", {},
     "john@x.com"),
    ("EMAIL", {"service": "fdm_standard", "name": "Иван"}, "0555 123 456",
     {"phone": "+996555123456"}, None),
    ("EMAIL", {"service": "fdm_standard", "name": "Иван"}, "нет почты", {}, None),
    # the phone question (skippable)
    ("PHONE", {"service": "fdm_standard", "name": "Иван", "email": "i@x.kg"},
     "мой номер +996 (555) 123-456", {}, "+996 (555) 123-456"),
    ("PHONE", {"service": "fdm_standard", "name": "Иван", "email": "i@x.kg"}, "Пропустить",
     {}, None),
    # the address after choosing delivery
    ("ADDRESS", {"delivery": "delivery"}, "Чуй 100, офис 5", {}, "Чуй 100, офис 5"),
    ("ADDRESS", {"delivery": "delivery"}, "на Токтогула 5, звоните 0700 123 456",
     {"phone": "+996700123456"}, "Токтогула 5, звоните"),
]  # fmt: skip


@pytest.mark.parametrize(("at", "data", "text", "values", "answer"), PRINTING_MORE)
def test_printing_more_messages(
    printing: Flow,
    at: str,
    data: dict[str, Any],
    text: str,
    values: dict[str, Any],
    answer: str | None,
) -> None:
    reading = read(printing, printing.steps[at], data, text, region="KG", language="ru")
    assert dict(reading.values) == values
    assert reading.answer == answer


def test_a_printing_summary_change_in_words(printing: Flow) -> None:
    data = {
        "service": "fdm_standard", "name": "Иван", "email": "i@x.kg", "phone": None,
        "files": [], "material": "pla", "layer_height": "0.2", "infill": "15",
        "delivery": "pickup",
    }  # fmt: skip
    summary = printing.steps["SUMMARY"]
    reading = read(printing, summary, data, "почта другая: new@x.kg", region="KG", language="ru")
    assert dict(reading.values) == {"email": "new@x.kg"}
    reading = read(printing, summary, data, "ой, телефон 0555 123 456", region="KG", language="ru")
    assert dict(reading.values) == {"phone": "+996555123456"}


ENGLISH_AND_KYRGYZ: list[tuple[str, dict[str, Any], str, dict[str, Any], str | None]] = [
    (ADDRESS, {}, "5 bottles please, 12 Manas Ave apt 3", {"quantity": 5}, "12 Manas Ave apt 3"),
    (ADDRESS, {}, "twenty bottles to 1 Chui St", {"quantity": 20}, "1 Chui St"),
    (ADDRESS, {}, "Deliver to 77 Ibraimova St, call +996 700 000 111",
     {"phone": "+996700000111"}, "77 Ibraimova St, call"),
    (ADDRESS, {}, "Чүй проспекти 120, 3 бөтөлкө", {"quantity": 3}, "Чүй проспекти 120"),
    (ADDRESS, {}, "он бир бөтөлкө, Манас 5", {"quantity": 11}, "Манас 5"),
    (ADDRESS, {}, "жыйырма бөтөлкө", {"quantity": 20}, None),
    (ADDRESS, {}, "телефон: 0555 010 203", {"phone": "+996555010203"}, None),
    (PHONE, {"address": "Chui 1"}, "it's 0555 123 456", {}, "0555 123 456"),
    (PHONE, {"address": "Chui 1"}, "номерим 0555 123 456", {}, "0555 123 456"),
    (PHONE, {"address": "Chui 1"}, "0555 123 456, 2 bottles", {"quantity": 2}, "0555 123 456"),
    (QUANTITY, GIVEN, "two", {}, "two"),
    (QUANTITY, GIVEN, "twenty-five bottles", {}, "twenty-five bottles"),
    (QUANTITY, GIVEN, "үч", {}, "үч"),
    (QUANTITY, GIVEN, "бешти алып келиңиз", {}, "бешти"),  # "bring five": 5
    (QUANTITY, GIVEN, "the address is wrong: 9 Frunze St", {"address": "9 Frunze St"}, None),
    (CONFIRM, GIVEN, "change the quantity to 6", {"quantity": 6}, None),
    (CONFIRM, GIVEN, "update the number to 0555 000 111", {"phone": "+996555000111"}, None),
    (CONFIRM, GIVEN, "дарек башка: Чүй 7", {"address": "Чүй 7"}, None),
    (CONFIRM, GIVEN, "телефон туура эмес: 0555 000 111", {"phone": "+996555000111"}, None),
    (CONFIRM, GIVEN, "yes", {}, None),
    (CONFIRM, GIVEN, "ооба", {}, None),
]  # fmt: skip


@pytest.mark.parametrize(("at", "data", "text", "values", "answer"), ENGLISH_AND_KYRGYZ)
def test_english_and_kyrgyz_messages(
    water: Flow, at: str, data: dict[str, Any], text: str, values: dict[str, Any], answer: str
) -> None:
    reading = read(water, water.steps[at], data, text, region="KG", language="en")
    assert dict(reading.values) == values
    assert reading.answer == answer
