"""/services and /order through the pure engine: catalog cards with order buttons and pages
(channels with buttons), a numbered list answered by number or name (without), listing in the
middle of a dialog, a flow without catalog, /order fresh and mid-dialog, the flow's texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderbot.dialog.engine import step
from orderbot.dialog.flow import Flow
from orderbot.dialog.loader import FLOWS_DIR, load_flow
from orderbot.dialog.models import (
    CreateOrder,
    DialogEnded,
    DialogOptions,
    DialogState,
    ReceivedFile,
    Reply,
    StepResult,
)
from orderbot.errors import FlowError

T0 = 1_700_000_000.0
OPTIONS = DialogOptions()
NEXT, PREV = "Следующие ›", "‹ Предыдущие"


@pytest.fixture(scope="module")
def printing() -> Flow:
    return load_flow("printing")


@pytest.fixture(scope="module")
def water() -> Flow:
    return load_flow("water")


def printing_variant(tmp_path: Path, *, catalog: str = "", texts: str = "") -> Path:
    """The printing flow with extra ``catalog`` keys and ``texts``, saved under ``tmp_path``."""
    source = (FLOWS_DIR / "printing.yaml").read_text(encoding="utf-8")
    absolute = FLOWS_DIR / "catalogs" / "printing.yaml"
    source = source.replace("  file: catalogs/printing.yaml\n", f"  file: {absolute}\n{catalog}")
    source = source.replace("texts:\n", f"texts:\n{texts}", 1)
    path = tmp_path / "printing.yaml"
    path.write_text(source, encoding="utf-8")
    return path


@pytest.fixture
def paged(tmp_path: Path) -> Flow:
    """Three services, two a page."""
    return load_flow(printing_variant(tmp_path, catalog="  page_size: 2\n"))


class Chat:
    def __init__(self, flow: Flow, *, buttons: bool = True) -> None:
        self.flow = flow
        self.buttons = buttons
        self.state: DialogState | None = None
        self.now = T0

    def say(self, text: str = "", *files: ReceivedFile) -> StepResult:
        self.now += 1
        result = step(
            self.flow,
            self.state,
            text,
            self.now,
            options=OPTIONS,
            attachments=files,
            buttons=self.buttons,
        )
        if result.state is not None:
            assert DialogState.from_json(result.state.to_json()) == result.state
        self.state = result.state
        return result

    def replies(self, text: str = "", *files: ReceivedFile) -> tuple[Reply, ...]:
        return self.say(text, *files).replies

    @property
    def at(self) -> str:
        assert self.state is not None
        return self.state.step


def order_buttons(replies: tuple[Reply, ...]) -> list[str]:
    return [label for r in replies for label in r.buttons if label.startswith("🛒")]


def stl(n: int) -> ReceivedFile:
    return ReceivedFile(
        name=f"part{n}.stl", checksum=f"{n:064x}", size=684, format="stl", path=f"u/{n}.stl"
    )


# -- channels with buttons (Telegram) ----------------------------------------------------------


def test_services_shows_cards_with_order_buttons(printing: Flow) -> None:
    chat = Chat(printing)
    greeting, header, *cards = chat.replies("/services")
    assert "студия 3D-печати" in greeting.text
    assert header.text == "Наши услуги и цены:"
    assert [c.text.splitlines()[0] for c in cards] == [
        "FDM-печать — 600 сом / модель",
        "Крупная печать — 1 500 сом / модель",
        "Срочная печать — 1 000 сом / модель",
    ]
    assert "до 20 см" in cards[0].text  # the description
    assert [c.buttons for c in cards] == [
        ("🛒 Заказать: FDM-печать",),
        ("🛒 Заказать: Крупная печать",),
        ("🛒 Заказать: Срочная печать",),
    ]
    # one page: no page buttons; the catalog step is not asked again below its own list
    assert not any("Какая услуга" in c.text for c in cards)
    assert chat.at == "SERVICE"
    assert chat.state is not None and chat.state.catalog_page == 0


@pytest.mark.parametrize("text", ["услуги", "Каталог", "services", "catalog", "/services@shop_bot"])
def test_catalog_words_as_the_whole_message(printing: Flow, text: str) -> None:
    assert order_buttons(Chat(printing).replies(text))


def test_pages_with_prev_and_next(paged: Flow) -> None:
    chat = Chat(paged)
    replies = chat.replies("/services")
    assert order_buttons(replies) == ["🛒 Заказать: FDM-печать", "🛒 Заказать: Крупная печать"]
    assert replies[-1] == Reply("Страница 1 из 2", (NEXT,))
    replies = chat.replies(NEXT)
    assert order_buttons(replies) == ["🛒 Заказать: Срочная печать"]
    assert replies[-1] == Reply("Страница 2 из 2", (PREV,))
    assert chat.replies(NEXT)[-1] == Reply("Страница 2 из 2", (PREV,))  # the last page stays
    assert order_buttons(chat.replies(PREV))[0] == "🛒 Заказать: FDM-печать"
    assert chat.at == "SERVICE"


def test_ordering_from_a_card_goes_on_after_the_catalog_step(paged: Flow) -> None:
    chat = Chat(paged)
    chat.say("/services")
    chat.say(NEXT)
    (reply,) = chat.replies("🛒 Заказать: Срочная печать")
    assert reply.text.startswith("Вы выбрали: Срочная печать.\n\nКак к вам обращаться?")
    assert chat.at == "NAME"
    assert chat.state is not None and chat.state.data == {"service": "fdm_rush"}
    for answer in ("Иван", "ivan@example.com", "Пропустить"):
        chat.say(answer)
    chat.say("", stl(1))
    chat.say("", stl(2))
    for answer in ("Продолжить", "PETG", "0.2 мм", "30 %", "Самовывоз"):
        chat.say(answer)
    summary = chat.say("/help").replies[-1]
    assert "Услуга: Срочная печать" in summary.text
    assert "Срочная печать: 2 × 1 000 сом = 2 000 сом" in summary.text
    result = chat.say("Подтвердить")
    (order,) = [e for e in result.effects if isinstance(e, CreateOrder)]
    assert order.data["items"] == [
        {
            "id": "fdm_rush",
            "name": "Срочная печать",
            "quantity": 2,
            "unit_price": "1000.00",
            "unit": "модель",
        }
    ]
    assert order.data["total"] == "2000.00"


def test_an_old_card_starts_an_order_without_a_dialog(printing: Flow) -> None:
    chat = Chat(printing)
    (reply,) = chat.replies("🛒 Заказать: Крупная печать")
    assert chat.at == "NAME"
    assert chat.state is not None and chat.state.data == {"service": "fdm_large"}
    assert reply.text.startswith("Вы выбрали: Крупная печать.\n\nКак к вам обращаться?")
    chat = Chat(printing)
    chat.say("🛒 Order: Large print")  # an English card, whatever the language
    assert chat.state is not None and chat.state.data == {"service": "fdm_large"}


def test_listing_mid_dialog_keeps_the_step(printing: Flow) -> None:
    chat = Chat(printing)
    for answer in ("Здравствуйте", "1", "Иван"):
        chat.say(answer)
    assert chat.at == "EMAIL"
    before = chat.state
    replies = chat.replies("/services")
    assert len(order_buttons(replies)) == 3
    assert replies[-1].text.startswith("Спасибо, Иван! Ваш e-mail?")  # the step, asked again
    assert replies[-1].buttons == ("« Назад", "✖ Отмена")
    assert chat.at == "EMAIL"
    assert before is not None and chat.state is not None
    assert chat.state.data == before.data
    # the next answer is read by the step as usual
    chat.say("ivan@example.com")
    assert chat.at == "PHONE"
    assert chat.state.catalog_page is None


def test_ordering_mid_dialog_changes_the_service_and_stays(printing: Flow) -> None:
    chat = Chat(printing)
    for answer in ("Здравствуйте", "1", "Иван"):
        chat.say(answer)
    chat.say("/services")
    (reply,) = chat.replies("🛒 Заказать: Крупная печать")
    assert reply.text.startswith("Вы выбрали: Крупная печать.\n\nСпасибо, Иван! Ваш e-mail?")
    assert chat.at == "EMAIL"
    assert chat.state is not None
    assert chat.state.data == {"service": "fdm_large", "name": "Иван"}


def test_ordering_at_the_edit_menu_returns_to_the_summary(printing: Flow) -> None:
    chat = Chat(printing)
    for answer in ("Hi", "1", "Ivan", "ivan@example.com", "skip"):
        chat.say(answer)
    chat.say("", stl(1))
    for answer in ("Continue", "PLA", "0.2 mm", "15 %", "Pickup", "Edit", "Service"):
        chat.say(answer)
    assert chat.at == "SERVICE"  # changing the service from the edit menu
    chat.say("/services")
    (reply,) = chat.replies("🛒 Order: Rush print")
    assert chat.at == "SUMMARY"
    assert "Service: Rush print" in reply.text


# -- channels without buttons (Chat2Desk) -------------------------------------------------------


def test_numbered_list_answered_by_number(paged: Flow) -> None:
    chat = Chat(paged, buttons=False)
    _greeting, listing = chat.replies("каталог")
    assert listing.buttons == ()
    assert "1. FDM-печать — 600 сом / модель" in listing.text
    assert "2. Крупная печать" in listing.text
    assert "Срочная" not in listing.text
    assert "Страница 1 из 2" in listing.text
    assert "ответьте номером или названием" in listing.text
    assert "«ещё»" in listing.text
    (listing,) = chat.replies("ещё")
    assert "3. Срочная печать — 1 000 сом / модель" in listing.text  # numbered through pages
    assert "«ещё»" not in listing.text  # the last page
    (reply,) = chat.replies("3")
    assert reply.text.startswith("Вы выбрали: Срочная печать.")
    assert chat.at == "NAME"
    assert chat.state is not None and chat.state.data == {"service": "fdm_rush"}


def test_numbered_list_answered_by_name(printing: Flow) -> None:
    chat = Chat(printing, buttons=False)
    (_, listing) = chat.replies("services")
    assert "3. Rush print — 1 000 KGS / model" in listing.text  # English from the word
    chat.replies("large print")
    assert chat.at == "NAME"
    assert chat.state is not None and chat.state.data == {"service": "fdm_large"}


def test_a_number_after_the_list_mid_dialog_answers_the_step(printing: Flow) -> None:
    # At a step with numbered options of its own ("1. « Назад") a number keeps its meaning
    # there: the list is bulleted and only names choose from it.
    chat = Chat(printing, buttons=False)
    for answer in ("Здравствуйте", "1", "Иван"):
        chat.say(answer)
    listing, question = chat.replies("/services")
    assert "• Крупная печать" in listing.text
    assert "2. Крупная" not in listing.text
    assert "напишите название услуги" in listing.text
    assert question.text.startswith("Спасибо, Иван! Ваш e-mail?")
    chat.say("Крупная печать")
    assert chat.at == "EMAIL"
    assert chat.state is not None and chat.state.data["service"] == "fdm_large"
    chat.say("/services")
    chat.say("1")  # the step's first option: Back
    assert chat.at == "NAME"
    assert chat.state.data["service"] == "fdm_large"


def test_numbers_and_more_count_only_right_after_a_list(paged: Flow) -> None:
    chat = Chat(paged, buttons=False)
    chat.say("/services")
    chat.say("Срочная печать")
    assert chat.at == "NAME"
    chat.say("ещё")  # now a name, not "more"
    assert chat.at == "EMAIL"
    assert chat.state is not None and chat.state.data["name"] == "ещё"


# -- a flow without a catalog ------------------------------------------------------------------


def test_services_without_a_catalog(water: Flow) -> None:
    chat = Chat(water)
    (reply,) = chat.replies("/services")
    assert "19 л" in reply.text
    assert chat.state is None  # nothing begun
    chat.say("Здравствуйте")
    chat.say("ул. Киевская 120, кв. 5")
    assert chat.at == "WAITING_PHONE"
    (reply,) = chat.replies("услуги")
    assert "19 л" in reply.text
    assert reply.text.endswith("Теперь номер телефона для связи, например 0555 123 456.")
    assert chat.at == "WAITING_PHONE"


def test_services_default_text(tmp_path: Path) -> None:
    source = (FLOWS_DIR / "water.yaml").read_text(encoding="utf-8")
    start = source.index("  services:\n")
    end = source.index("\ncancel_words:")
    path = tmp_path / "water.yaml"
    path.write_text(source[:start] + source[end:], encoding="utf-8")
    (reply,) = Chat(load_flow(path)).replies("/services")
    assert "/order" in reply.text


# -- /order ------------------------------------------------------------------------------------


def test_order_without_a_dialog_starts_one(water: Flow) -> None:
    chat = Chat(water)
    greeting, question = chat.replies("/order")
    assert "доставка питьевой воды" in greeting.text
    assert "адрес доставки" in question.text
    assert chat.at == "WAITING_ADDRESS"


def test_order_mid_dialog_asks_before_starting_over(water: Flow) -> None:
    chat = Chat(water)
    chat.say("Здравствуйте")
    chat.say("ул. Киевская 120, кв. 5")
    result = chat.say("/order")
    (reply,) = result.replies
    assert reply.text.startswith("Заказ уже оформляется. Чтобы начать заново, отправьте /order")
    assert reply.text.endswith("номер телефона для связи, например 0555 123 456.")
    assert chat.at == "WAITING_PHONE"
    assert result.effects == ()
    # anything else goes on with the dialog, and the offer is gone
    chat.say("0555 123 456")
    assert chat.at == "WAITING_QUANTITY"
    chat.say("/order")
    result = chat.say("/order")  # confirmed: a fresh dialog
    assert chat.at == "WAITING_ADDRESS"
    assert chat.state is not None and chat.state.data == {}
    assert [e.outcome for e in result.effects if isinstance(e, DialogEnded)] == ["abandoned"]


def test_order_after_only_browsing_needs_no_confirmation(printing: Flow) -> None:
    chat = Chat(printing)
    chat.say("/services")
    result = chat.say("/order")
    assert result.effects == ()
    assert "Какая услуга вам нужна?" in result.replies[-1].text
    assert chat.at == "SERVICE"
    assert chat.state is not None and chat.state.message_count == 2  # the same dialog


# -- the flow's texts --------------------------------------------------------------------------


def test_catalog_texts_from_the_flow(tmp_path: Path) -> None:
    texts = """\
  catalog_item:
    ru: "{name}: {price} за {unit}"
    en: "{name}: {price} per {unit}"
  catalog_order_button:
    ru: "Хочу {name}"
    en: "I want {name}"
"""
    chat = Chat(load_flow(printing_variant(tmp_path, texts=texts)))
    replies = chat.replies("/services")
    assert replies[2] == Reply("FDM-печать: 600 сом за модель", ("Хочу FDM-печать",))
    chat.say("Хочу Крупная печать")
    assert chat.at == "NAME"


@pytest.mark.parametrize(
    ("catalog", "texts", "message"),
    [
        (
            "",
            '  catalog_order_button: {ru: "Заказать", en: "Order this"}\n',
            "texts.catalog_order_button.ru: must contain {name}",
        ),
        (
            "",
            '  catalog_item: {ru: "{name} {colour}", en: "{name}"}\n',
            "texts.catalog_item.ru: unknown placeholder {colour}",
        ),
        ("", '  catalog_next: {ru: "Дальше"}\n', "texts.catalog_next: missing text for language"),
        ("  page_size: 0\n", "", "catalog.page_size: must be a whole number from 1 to 20"),
    ],
)
def test_flow_check_is_strict_about_given_texts(
    tmp_path: Path, catalog: str, texts: str, message: str
) -> None:
    with pytest.raises(FlowError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_flow(printing_variant(tmp_path, catalog=catalog, texts=texts))


def test_state_without_the_new_fields_still_loads() -> None:
    old = b'{"step":"NAME","language":"ru","data":{},"started_at":1.0,"updated_at":1.0,"message_count":1}'
    state = DialogState.from_json(old)
    assert state.catalog_page is None
    assert state.restart_asked is False
    with pytest.raises(ValueError, match="wrong type"):
        DialogState.from_json(old[:-1] + b',"catalog_page":"2"}')
