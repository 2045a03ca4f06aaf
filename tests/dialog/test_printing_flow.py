"""Whole 3D-printing conversations through the pure engine: catalog, files, settings, Back,
Cancel, the edit menu, line items and total."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.dialog.engine import step, wants_files
from orderbot.dialog.flow import Flow
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import (
    CreateOrder,
    DialogEnded,
    DialogOptions,
    DialogState,
    ReceivedFile,
    StepResult,
)
from orderbot.dialog.rendering import order_lines, render_buttons_as_text
from orderbot.errors import FlowError
from orderbot.messages import Attachment

T0 = 1_700_000_000.0
OPTIONS = DialogOptions()
MB = 1024 * 1024


@pytest.fixture(scope="module")
def printing() -> Flow:
    return load_flow("printing")


def stored(name: str, n: int = 1) -> ReceivedFile:
    return ReceivedFile(
        name=name, checksum=f"{n:064x}", size=684, format="stl", path=f"uploads/{n:064x}.stl"
    )


class Chat:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.state: DialogState | None = None
        self.now = T0

    def say(self, text: str = "", *files: ReceivedFile | Attachment) -> StepResult:
        self.now += 1
        result = step(self.flow, self.state, text, self.now, options=OPTIONS, attachments=files)
        if result.state is not None:
            assert DialogState.from_json(result.state.to_json()) == result.state
        self.state = result.state
        return result

    def reply(self, text: str = "", *files: ReceivedFile | Attachment) -> str:
        result = self.say(text, *files)
        assert len(result.replies) >= 1
        return result.replies[-1].text

    def buttons(self) -> tuple[str, ...]:
        assert self.state is not None
        return step(self.flow, self.state, "/help", self.now, options=OPTIONS).replies[0].buttons

    @property
    def at(self) -> str:
        assert self.state is not None
        return self.state.step


def to_files(chat: Chat, language: str = "ru") -> None:
    chat.say("Здравствуйте" if language == "ru" else "Hello")
    chat.say("1")
    chat.say("Иван" if language == "ru" else "John")
    chat.say("ivan@example.com")
    chat.say("Пропустить" if language == "ru" else "skip")
    assert chat.at == "FILES"


def test_russian_order_with_buttons_by_number_and_name(printing: Flow) -> None:
    chat = Chat(printing)
    first = chat.say("Здравствуйте")
    greeting, prompt = first.replies
    assert "студия 3D-печати" in greeting.text
    # The catalog with prices and descriptions, and its items as buttons; no Back on step one.
    assert "1. FDM-печать — 600 сом / модель" in prompt.text
    assert "Крупная печать — 1 500 сом / модель" in prompt.text
    assert "готово за 24 часа" in prompt.text
    assert prompt.buttons == ("FDM-печать", "Крупная печать", "Срочная печать", "✖ Отмена")

    # Typing where a button is wanted says so and keeps the step.
    assert "выберите услугу кнопкой" in chat.reply("металл")
    assert chat.at == "SERVICE"
    assert "Как к вам обращаться" in chat.reply("Срочная печать")  # by name
    assert chat.state is not None
    assert chat.state.data["service"] == "fdm_rush"

    assert "буквы" in chat.reply("12345")
    assert "Спасибо, Анна!" in chat.reply("  Анна ")
    assert "Не похоже на адрес почты" in chat.reply("anna at mail")
    phone = chat.say("Anna@Example.com")
    assert phone.replies[0].buttons == ("Пропустить", "« Назад", "✖ Отмена")
    assert "Не получилось распознать номер" in chat.reply("123")
    files_prompt = chat.say("1")  # the first button: skip
    assert chat.state is not None
    assert chat.state.data["phone"] is None
    assert "STL, OBJ или 3MF" in files_prompt.replies[0].text
    assert files_prompt.replies[0].buttons == (
        "Продолжить",
        "Удалить последний",
        "« Назад",
        "✖ Отмена",
    )

    # Files: a text re-asks, "continue" without files is refused, several files are kept.
    assert "Здесь нужен файл модели" in chat.reply("вот моя модель")
    assert "нет ни одного файла" in chat.reply("Продолжить")
    assert "Файл cube.stl получен ✅ Всего файлов: 1" in chat.reply("", stored("cube.stl", 1))
    two = chat.say("", stored("gear.obj", 2), stored("case.3mf", 3))
    assert "gear.obj получен ✅ Всего файлов: 2" in two.replies[0].text
    assert "case.3mf получен ✅ Всего файлов: 3" in two.replies[0].text
    assert "Удалил case.3mf. Осталось файлов: 2." in chat.reply("удалить последний")
    assert "это картинка" in chat.reply("", ReceivedFile(name="photo.stl", refused="image"))
    assert chat.state is not None
    assert [f["name"] for f in chat.state.data["files"]] == ["cube.stl", "gear.obj"]

    material = chat.reply("1")  # continue
    assert "PLA — простой и недорогой" in material
    assert "TPU — мягкий и гибкий" in material
    assert "выберите материал кнопкой" in chat.reply("дерево")
    assert "0.2 мм — золотая середина" in chat.reply("petg")
    assert "15 % — лёгкая" in chat.reply("0,2")
    assert "Самовывоз" in chat.reply("30")  # the infill value, not the 30th button
    summary = chat.say("Самовывоз")
    (reply,) = summary.replies
    for line in (
        "Услуга: Срочная печать",
        "Имя: Анна",
        "E-mail: Anna@example.com",
        "Телефон: —",
        "Файлы: cube.stl, gear.obj",
        "Материал: PETG",
        "Высота слоя: 0.2 мм",
        "Заполнение: 30 %",
        "Получение: Самовывоз",
        "Адрес: —",
        "Срочная печать: 2 × 1 000 сом = 2 000 сом",
        "Итого: 2 000 сом",
    ):
        assert line in reply.text
    assert reply.buttons == ("✅ Подтвердить", "✏️ Изменить", "« Назад", "✖ Отмена")
    assert "Нажмите «Подтвердить» или «Изменить»".lower() in chat.reply("может быть").lower()

    done = chat.say("Подтверждаю")
    assert done.state is None
    assert done.replies[0].text.startswith("Спасибо! Заказ №{order_id} принят.")
    order, ended = done.effects
    assert isinstance(order, CreateOrder)
    assert isinstance(ended, DialogEnded)
    assert ended.outcome == "completed"
    assert (order.phone, order.address, order.quantity, order.language) == (None, None, None, "ru")
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
    assert order.data["currency"] == "KGS"
    assert order.data["files"] == [stored("cube.stl", 1).to_data(), stored("gear.obj", 2).to_data()]
    assert {k: order.data[k] for k in ("material", "layer_height", "infill", "delivery")} == {
        "material": "petg",
        "layer_height": "0.2",
        "infill": "30",
        "delivery": "pickup",
    }
    assert "address" not in order.data


def test_english_order_with_delivery_back_and_edit_menu(printing: Flow) -> None:
    chat = Chat(printing)
    chat.say("Hello there")
    assert "What is your name" in chat.reply("Large print")
    # Back returns to the previous step; the earlier answer is kept until it is answered again.
    assert "Which service" in chat.reply("« Back")
    assert chat.at == "SERVICE"
    assert chat.state is not None
    assert chat.state.data["service"] == "fdm_large"
    chat.say("FDM printing")
    chat.say("John Smith")
    assert "What is your name" in chat.reply("back")  # the typed word works too
    chat.say("John Smith")
    chat.say("john@example.com")
    assert "model files" in chat.reply("+996 555 123 456")
    for n in range(1, 4):
        chat.say("", stored(f"part{n}.stl", n))
    assert "Which plastic" in chat.reply("Continue")
    assert "Please pick a material with a button" in chat.reply("wood")
    chat.say("ABS")
    chat.say("0.1 mm")
    chat.say("100")
    assert "delivery address" in chat.reply("Delivery")
    summary = chat.reply("120 Kievskaya St, apt 5")
    assert "Address: 120 Kievskaya St, apt 5" in summary
    assert "FDM printing: 3 × 600 KGS = 1 800 KGS" in summary
    assert "Total: 1 800 KGS" in summary

    # Edit one field: straight back to the summary, not through the later steps.
    menu = chat.say("Edit")
    assert "What would you like to change" in menu.replies[0].text
    assert menu.replies[0].buttons[-2:] == ("« Back", "✖ Cancel")
    assert "Address" in menu.replies[0].buttons
    chat.say("Material")
    assert chat.state is not None
    assert chat.state.return_to == "SUMMARY"
    summary = chat.reply("TPU")
    assert chat.at == "SUMMARY"
    assert "Material: TPU" in summary
    assert "Layer height: 0.1 mm" in summary

    # Back while editing leaves the answer as it was.
    chat.say("2")  # Edit
    chat.say("Name")
    assert "Name: John Smith" in chat.reply("Back")
    assert chat.at == "SUMMARY"

    # Switching to pickup drops the address; the menu then offers no "Address".
    chat.say("Edit")
    chat.say("Getting it")
    summary = chat.reply("Pickup")
    assert "Address: —" in summary
    assert "Address" not in chat.say("Edit").replies[0].buttons
    # Switching back to delivery asks the address again (it is newly needed), then returns.
    chat.say("Getting it")
    assert "delivery address" in chat.reply("Delivery")
    assert "Address: 5 Chui Ave" in chat.reply("5 Chui Ave")

    # Edit the files: add one more, continue, back at the summary with a new total.
    chat.say("Edit")
    chat.say("Files")
    chat.say("", stored("part4.stl", 4))
    assert "Total: 2 400 KGS" in chat.reply("Continue")

    done = chat.say("✅ Confirm")
    order = done.effects[0]
    assert isinstance(order, CreateOrder)
    assert order.phone == "+996555123456"
    assert order.address == "5 Chui Ave"
    assert order.language == "en"
    assert order.data["total"] == "2400.00"
    assert order.data["items"][0]["quantity"] == 4
    assert order.data["items"][0]["name"] == "FDM printing"
    assert order.data["material"] == "tpu"
    assert len(order.data["files"]) == 4


@pytest.mark.parametrize("answer", ["✖ Отмена", "отмена", "/cancel"])
def test_cancel_at_any_step(printing: Flow, answer: str) -> None:
    chat = Chat(printing)
    to_files(chat)
    chat.say("", stored("a.stl"))
    result = chat.say(answer)
    assert result.state is None
    assert "Заказ отменён" in result.replies[0].text
    (ended,) = result.effects
    assert isinstance(ended, DialogEnded)
    assert ended.outcome == "cancelled"
    assert ended.last_step == "FILES"


def test_cancel_button_by_its_number(printing: Flow) -> None:
    chat = Chat(printing)
    to_files(chat)
    shown = chat.buttons()
    assert shown[-1] == "✖ Отмена"
    result = chat.say(str(len(shown)))
    assert result.state is None
    assert isinstance(result.effects[0], DialogEnded)
    assert not any(isinstance(e, CreateOrder) for e in result.effects)


def test_back_button_by_its_number_and_none_on_the_first_step(printing: Flow) -> None:
    chat = Chat(printing)
    chat.say("Привет")
    assert "« Назад" not in chat.buttons()
    assert "кнопкой" in chat.reply("назад")  # nothing to go back to: just a wrong answer
    chat.say("2")
    assert chat.buttons() == ("« Назад", "✖ Отмена")
    chat.say("1")  # Back, by number
    assert chat.at == "SERVICE"


def test_numbered_text_for_channels_without_buttons(printing: Flow) -> None:
    chat = Chat(printing)
    to_files(chat)
    chat.say("", stored("a.stl"))
    material = chat.say("Продолжить").replies[0]
    text = render_buttons_as_text(material)
    assert text.endswith("1. PLA\n2. PETG\n3. ABS\n4. TPU\n5. « Назад\n6. ✖ Отмена")
    chat.say("3")
    assert chat.state is not None
    assert chat.state.data["material"] == "abs"


def test_file_refusal_reasons_are_explained(printing: Flow) -> None:
    chat = Chat(printing)
    to_files(chat)
    big = chat.reply("", ReceivedFile(name="big.stl", refused="too_large", limit=50 * MB))
    assert "big.stl больше 50 МБ" in big
    tg = chat.reply("", ReceivedFile(name="huge.stl", refused="telegram_limit", limit=20 * MB))
    assert "huge.stl больше 20 МБ" in tg
    assert "Telegram не даёт ботам скачивать" in tg
    assert "повреждён" in chat.reply("", ReceivedFile(name="cut.stl", refused="damaged"))
    assert "не 3D-модель" in chat.reply("", ReceivedFile(name="a.pdf", refused="unsupported"))
    # An attachment nobody fetched (no fetcher for its channel) is not silently dropped.
    unfetched = chat.reply("", Attachment(url="https://x/y", name="model.stl"))
    assert "Не удалось получить файл model.stl" in unfetched
    assert chat.state is not None
    assert chat.state.data["files"] == []


def test_a_location_at_the_file_step_is_not_a_file(printing: Flow) -> None:
    chat = Chat(printing)
    to_files(chat)
    pin = Attachment(url="geo:42.87,74.59", kind="location")
    assert "ответьте текстом" in chat.reply("", pin)
    assert chat.state is not None
    assert "files" not in chat.state.data


def test_file_limit_per_order(printing: Flow) -> None:
    chat = Chat(printing)
    to_files(chat)
    for n in range(10):
        chat.say("", stored(f"{n}.stl", n))
    assert "можно не больше 10 файлов" in chat.reply("", stored("11.stl", 11))
    assert chat.state is not None
    assert len(chat.state.data["files"]) == 10


def test_attachments_outside_the_file_step(printing: Flow) -> None:
    chat = Chat(printing)
    chat.say("Привет")
    chat.say("1")
    photo = Attachment(url="https://x/p.jpg", name="p.jpg", kind="photo")
    assert "ответьте текстом" in chat.reply("", photo)
    assert chat.at == "NAME"
    # A caption is read as the answer; the picture is ignored.
    assert "Спасибо, Анна!" in chat.reply("Анна", photo)


def test_wants_files(printing: Flow) -> None:
    chat = Chat(printing)
    assert not wants_files(printing, None)
    chat.say("Привет")
    assert not wants_files(printing, chat.state)
    to_files(chat)
    assert wants_files(printing, chat.state)


def test_order_lines_without_a_chosen_item(printing: Flow) -> None:
    assert order_lines(printing, {}, "ru") == []
    assert order_lines(printing, {"service": "unknown"}, "ru") == []
    lines = order_lines(printing, {"service": "fdm_large", "files": [{}, {}]}, "en")
    assert lines == [
        {
            "id": "fdm_large",
            "name": "Large print",
            "quantity": 2,
            "unit_price": "1500.00",
            "unit": "model",
        }
    ]


def test_state_from_before_return_to_still_loads(printing: Flow) -> None:
    old = (
        b'{"step":"NAME","language":"ru","data":{},"started_at":1,"updated_at":1,"message_count":1}'
    )
    state = DialogState.from_json(old)
    assert state.return_to is None
    with pytest.raises(ValueError, match="wrong type"):
        DialogState.from_json(old[:-1] + b',"return_to":5}')


def test_flow_check_command_passes_for_printing() -> None:
    result = CliRunner().invoke(app, ["flow", "check", "printing"])
    assert result.exit_code == 0, result.output
    assert "flow printing: ok" in result.output
    assert "FILES" in result.output


def test_a_dialog_whose_summary_step_vanished_starts_over(printing: Flow) -> None:
    stale = DialogState("NAME", "ru", {"service": "fdm_standard"}, T0, T0, 2, return_to="GONE")
    result = step(printing, stale, "Анна", T0 + 5, options=OPTIONS)
    assert result.state is not None
    assert result.state.step == "SERVICE"
    assert isinstance(result.effects[0], DialogEnded)
    assert result.effects[0].outcome == "abandoned"


CATALOG_FLOW = """
name: shop
languages: [ru, en]
start: ITEM
catalog: {file: cat.yaml, field: item}
navigation: {back: {ru: Назад, en: Back}, cancel: {ru: Отмена, en: Cancel}}
texts:
  greeting: {ru: Привет, en: Hi}
  help: {ru: Помощь, en: Help}
  cancelled: {ru: Отменено, en: Cancelled}
  empty: {ru: Текстом, en: Text please}
  unknown_command: {ru: Нет такой, en: No such}
steps:
  ITEM:
    prompt: {ru: "{catalog}", en: "{catalog}"}
    validator: catalog_choice
    params: {items: catalog}
    field: item
    errors: {default: {ru: Кнопкой, en: A button}}
    next: DONE
  DONE:
    end: completed
    text: {ru: "№{order_id}", en: "#{order_id}"}
"""
CATALOG = """
currency: KGS
items:
  - {id: a, name: {ru: А, en: A}, description: {ru: д, en: d}, price: 12.5, unit: {ru: шт, en: pc}}
"""


def write_flow(tmp_path: Path, flow: str = CATALOG_FLOW, catalog: str = CATALOG) -> Path:
    (tmp_path / "cat.yaml").write_text(catalog, encoding="utf-8")
    path = tmp_path / "shop.yaml"
    path.write_text(flow, encoding="utf-8")
    return path


def test_catalog_file_relative_to_the_flow_and_exact_prices(tmp_path: Path) -> None:
    flow = load_flow(write_flow(tmp_path))
    assert flow.catalog is not None
    assert flow.catalog.items[0].price == Decimal("12.5")
    assert flow.catalog.currency_name == {"ru": "KGS", "en": "KGS"}
    first = step(flow, None, "Hi", T0, options=OPTIONS)
    assert "1. A — 12.50 KGS / pc\nd" in first.replies[1].text
    assert first.replies[1].buttons == ("A", "Cancel")
    assert first.state is not None
    done = step(flow, first.state, "A", T0 + 1, options=OPTIONS)
    order = done.effects[0]
    assert isinstance(order, CreateOrder)
    assert order.data == {
        "item": "a",
        "items": [{"id": "a", "name": "A", "quantity": 1, "unit_price": "12.50", "unit": "pc"}],
        "total": "12.50",
        "currency": "KGS",
    }


@pytest.mark.parametrize(
    ("flow", "catalog", "message"),
    [
        (CATALOG_FLOW, CATALOG.replace("12.5", "12.505"), "at most two decimals"),
        (CATALOG_FLOW, CATALOG.replace("12.5", "-1"), "at most two decimals"),
        (CATALOG_FLOW, CATALOG.replace("12.5", "cheap"), "must be a number"),
        (CATALOG_FLOW, CATALOG.replace(", unit: {ru: шт, en: pc}", ""), "missing key 'unit'"),
        (CATALOG_FLOW, "currency: KGS\nitems: []", "catalog.items: must be a non-empty list"),
        (CATALOG_FLOW.replace("field: item}", "field: thing}"), CATALOG, "no step collects"),
        (CATALOG_FLOW.replace("file: cat.yaml", "file: nope.yaml"), CATALOG, "cannot read"),
        (CATALOG_FLOW.replace(", cancel: {ru: Отмена, en: Cancel}", ""), CATALOG, "'cancel'"),
        (CATALOG_FLOW.replace("field: item\n", "field: total\n"), CATALOG, "reserved"),
        (
            CATALOG_FLOW.replace("catalog: {file: cat.yaml, field: item}\n", ""),
            CATALOG,
            "the flow has no catalog",
        ),
        (
            CATALOG_FLOW.replace(
                "field: item\n    errors", "returns_to: DONE\n    field: item\n    errors"
            ),
            CATALOG,
            "is not a question step",
        ),
    ],
)
def test_broken_catalog_flows_fail_at_load(
    tmp_path: Path, flow: str, catalog: str, message: str
) -> None:
    with pytest.raises(FlowError, match=message):
        load_flow(write_flow(tmp_path, flow, catalog))


def test_model_files_step_needs_a_field_and_two_buttons(tmp_path: Path) -> None:
    files_step = """
  FILES:
    prompt: {ru: Файлы, en: Files}
    validator: model_files
    field: files
    buttons: {ru: [Дальше, Удалить], en: [Next, Remove]}
    messages:
      received: {ru: "{file_name} {file_count}", en: "{file_name} {file_count}"}
      removed: {ru: "-{file_name}", en: "-{file_name}"}
    errors: {default: {ru: "Нет: {file_name}", en: "No: {file_name}"}}
    next: DONE
"""
    base = CATALOG_FLOW.replace("next: DONE\n  DONE:", "next: FILES\n" + files_step + "  DONE:")
    assert load_flow(write_flow(tmp_path, base)).steps["FILES"].validator == "model_files"
    for broken, message in [
        (base.replace("    field: files\n", ""), "needs a 'field'"),
        (base.replace("[Дальше, Удалить], en: [Next, Remove]", "[Д], en: [N]"), "two labels"),
        (
            base.replace('      removed: {ru: "-{file_name}", en: "-{file_name}"}\n', ""),
            "'removed'",
        ),
    ]:
        with pytest.raises(FlowError, match=message):
            load_flow(write_flow(tmp_path, broken))
