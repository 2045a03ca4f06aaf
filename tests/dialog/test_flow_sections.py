"""The flow sections added for issue 16 (labels, units, faq, business_hours): what the loader
accepts and the clear errors it gives, and business hours in the confirmation."""

from __future__ import annotations

import datetime
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import yaml

from orderbot.dialog.engine import step
from orderbot.dialog.flow import BusinessHours, Flow
from orderbot.dialog.hours import next_opening, when_text
from orderbot.dialog.loader import FLOWS_DIR, load_flow
from orderbot.dialog.models import DialogOptions
from orderbot.errors import FlowError

BISHKEK = zoneinfo.ZoneInfo("Asia/Bishkek")


def at(text: str) -> float:
    """Unix time of a local Bishkek time such as "2027-01-08 21:30" (a Friday)."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=BISHKEK).timestamp()


def water_raw() -> dict[str, Any]:
    path = FLOWS_DIR / "water.yaml"
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return raw


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


HOURS = BusinessHours(
    "Asia/Bishkek",
    ((540, 1200),) * 6 + ((600, 1080),),  # Mon-Sat 9-20, Sun 10-18
    frozenset({"2027-01-01"}),
)


@pytest.mark.parametrize(
    ("moment", "language", "said"),
    [
        ("2027-01-08 12:00", "ru", None),  # Friday noon: open
        ("2027-01-08 08:59", "ru", "сегодня с 9:00"),
        ("2027-01-08 21:30", "ru", "завтра с 9:00"),
        ("2027-01-09 20:00", "ru", "завтра с 10:00"),  # Saturday at closing -> Sunday
        ("2027-01-09 20:00", "en", "tomorrow from 10:00"),
        ("2027-01-09 20:00", "ky", "эртең, саат 10:00"),
        ("2026-12-31 22:00", "ru", "в субботу с 9:00"),  # New Year's Day is a holiday
        ("2027-01-10 17:59", "ru", None),  # Sunday, open until 18:00
    ],
)
def test_business_hours(moment: str, language: str, said: str | None) -> None:
    now = at(moment)
    opening = next_opening(HOURS, now)
    if said is None:
        assert opening is None
    else:
        assert opening is not None
        assert when_text(opening, now, language) == said


def test_never_open_promises_nothing() -> None:
    closed = BusinessHours("Asia/Bishkek", (None,) * 7)
    assert next_opening(closed, at("2027-01-08 12:00")) is None


def confirm_at(flow: Flow, moment: str) -> str:
    options = DialogOptions()
    now = at(moment)
    first = step(flow, None, "3 бутыли на Манаса 40, 0555 123 456", now, options=options)
    done = step(flow, first.state, "да", now + 60, options=options)
    assert done.state is None
    return done.replies[0].text


def test_the_confirmation_says_when_a_closed_shop_delivers() -> None:
    water = load_flow("water")
    late = confirm_at(water, "2027-01-08 21:30")
    assert late.startswith("Спасибо! Заказ №{order_id} принят.")
    assert late.endswith("Сейчас мы не работаем, поэтому доставим завтра с 9:00.")
    assert late.count("{") == 1
    assert "не работаем" not in confirm_at(water, "2027-01-08 12:00")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"business_hours": {"timezone": "Mars/Olympus", "week": {}}}, "unknown time zone"),
        ({"business_hours": {"timezone": "Asia/Bishkek"}}, "missing key 'week'"),
        (
            {"business_hours": {"timezone": "Asia/Bishkek", "week": {"mon": "9-20"}}},
            'business_hours.week.mon: must be like "09:00-20:00"',
        ),
        (
            {"business_hours": {"timezone": "Asia/Bishkek", "week": {"mon": "20:00-09:00"}}},
            "must open before it closes",
        ),
        (
            {"business_hours": {"timezone": "Asia/Bishkek", "week": {"monday": "closed"}}},
            "unknown key 'monday'",
        ),
        (
            {
                "business_hours": {
                    "timezone": "Asia/Bishkek",
                    "week": {},
                    "holidays": ["1 January"],
                }
            },
            "is not a date",
        ),
        ({"faq": {"price": "150"}}, "faq: must be a list"),
        ({"faq": [{"keywords": {"ru": ["цена"]}}]}, "faq[0]: missing key 'answer'"),
        (
            {"faq": [{"keywords": {"fr": ["prix"]}, "answer": {"ru": "a", "en": "b", "ky": "c"}}]},
            "faq[0].keywords: language 'fr'",
        ),
        (
            {"faq": [{"keywords": {"ru": ["цена"]}, "answer": {"ru": "a"}}]},
            "faq[0].answer: missing text for language 'en'",
        ),
    ],
)
def test_flow_check_errors(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    raw = water_raw() | change
    with pytest.raises(FlowError, match=r"flow\.yaml: ") as caught:
        load_flow(write(tmp_path, raw))
    assert message in str(caught.value)


def test_units_only_on_a_counting_step(tmp_path: Path) -> None:
    raw = water_raw()
    raw["steps"]["WAITING_PHONE"]["units"] = {"ru": ["шт"]}
    with pytest.raises(FlowError, match=r"WAITING_PHONE\.units: only a quantity or integer step"):
        load_flow(write(tmp_path, raw))


def test_labels_need_a_field(tmp_path: Path) -> None:
    raw = water_raw()
    raw["steps"]["WAITING_CONFIRMATION"]["labels"] = {"ru": ["итог"]}
    with pytest.raises(FlowError, match="only a step with a 'field' has a label"):
        load_flow(write(tmp_path, raw))


def test_the_shipped_flows_have_the_new_sections() -> None:
    water = load_flow("water")
    assert water.hours is not None and water.hours.timezone == "Asia/Bishkek"
    assert len(water.faq) == 3
    assert water.steps["WAITING_QUANTITY"].units["ky"][0] == "бөтөлкө"
    assert water.steps["WAITING_ADDRESS"].labels["ru"][0] == "адрес"


def test_a_label_names_one_field(tmp_path: Path) -> None:
    raw = water_raw()
    raw["steps"]["WAITING_QUANTITY"]["labels"] = {"ru": ["номер"]}
    with pytest.raises(FlowError, match="'номер' already names field 'phone'"):
        load_flow(write(tmp_path, raw))


def test_a_partial_language_may_lack_texts(tmp_path: Path) -> None:
    raw = water_raw()
    del raw["texts"]["help"]["ky"]
    del raw["steps"]["WAITING_CONFIRMATION"]["buttons"]["ky"]
    flow = load_flow(write(tmp_path, raw))
    assert flow.languages == ("ru", "en")
    assert flow.spoken == ("ru", "en", "ky")
    assert flow.language("ky") == "ky"
    assert flow.texts["help"]["ky"] == flow.texts["help"]["ru"]  # shown in the first language
    assert flow.steps["WAITING_CONFIRMATION"].buttons["ky"] == ("Да", "Нет")
    del raw["texts"]["help"]["en"]
    with pytest.raises(FlowError, match=r"texts\.help: missing text for language 'en'"):
        load_flow(write(tmp_path, raw))


def test_a_language_listed_twice(tmp_path: Path) -> None:
    raw = water_raw() | {"partial_languages": ["en"]}
    with pytest.raises(FlowError, match="listed twice"):
        load_flow(write(tmp_path, raw))


def test_the_printing_flow_speaks_kyrgyz() -> None:
    printing = load_flow("printing")
    first = step(printing, None, "Саламатсызбы", 1.0, options=DialogOptions())
    assert first.state is not None and first.state.language == "ky"
    greeting, question = first.replies
    assert "3D-басып чыгаруу студиясы" in greeting.text
    assert "Сизге кайсы кызмат керек?" in question.text
    assert "FDM-басуу" in question.text
    named = step(printing, first.state, "1", 2.0, options=DialogOptions())
    assert named.state is not None and named.state.step == "NAME"
    assert "Атыңызды жазыңыз" in named.replies[0].text


def test_the_reminder_text_is_checked_like_every_text(tmp_path: Path) -> None:
    raw = water_raw()
    raw["texts"]["reminder"] = {"ru": "Продолжим?"}
    with pytest.raises(FlowError, match=r"texts\.reminder: missing text for language 'en'"):
        load_flow(write(tmp_path, raw))
    raw["texts"]["reminder"] = {"ru": "Продолжим, {name}?", "en": "Go on?"}
    with pytest.raises(FlowError, match=r"texts\.reminder"):
        load_flow(write(tmp_path, raw))
    raw["texts"]["reminder"] = {"ru": "Продолжим? {manager_phone}", "en": "Go on?"}
    flow = load_flow(write(tmp_path, raw))
    assert flow.texts["reminder"]["ky"] == "Продолжим? {manager_phone}"  # partial: from ru
