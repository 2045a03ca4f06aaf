"""Order statuses and tracking texts, pure: transitions, what a message asks for, the answers."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orderbot.cli import app
from orderbot.config import Settings
from orderbot.desk.requests import HandoffRequest, Track, classify
from orderbot.desk.texts import (
    render_not_found,
    render_order,
    render_order_list,
    status_notification,
)
from orderbot.dialog.loader import FLOWS_DIR, load_flow
from orderbot.errors import FlowError
from orderbot.orders.models import HistoryEntry, OrderSummary
from orderbot.orders.status import STATUSES, InvalidTransition, allowed_next, check_transition

WATER = load_flow("water")
PRINTING = load_flow("printing")


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ("new", "confirmed"),
        ("confirmed", "in_progress"),
        ("in_progress", "ready"),
        ("ready", "delivered"),
        ("new", "delivered"),  # any later status at once
        ("confirmed", "ready"),
        ("new", "cancelled"),
        ("ready", "cancelled"),
    ],
)
def test_allowed_transitions(current: str, wanted: str) -> None:
    check_transition(current, wanted)


@pytest.mark.parametrize(
    ("current", "wanted", "message"),
    [
        ("ready", "confirmed", "cannot go from ready to confirmed (allowed: delivered, cancelled)"),
        ("confirmed", "new", "cannot go from confirmed to new"),
        ("new", "new", "already new"),
        ("delivered", "cancelled", "delivered orders do not change status"),
        ("cancelled", "new", "cancelled orders do not change status"),
    ],
)
def test_other_transitions_are_refused_with_a_reason(
    current: str, wanted: str, message: str
) -> None:
    with pytest.raises(InvalidTransition, match=re.escape(message)):
        check_transition(current, wanted)


def test_unknown_status_and_final_statuses() -> None:
    with pytest.raises(ValueError, match="unknown status 'shipped'"):
        check_transition("new", "shipped")
    assert allowed_next("delivered") == allowed_next("cancelled") == ()
    assert set(STATUSES) == {"new", "confirmed", "in_progress", "ready", "delivered", "cancelled"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/track", Track(None)),
        ("/track 12", Track(12)),
        ("/track@shop_bot 7", Track(7)),
        ("статус заказа", Track(None)),
        ("Статус заказа №12", Track(12)),
        ("где мой заказ?", Track(None)),
        ("Где мой заказ 5", Track(5)),
        ("Track my order", Track(None)),
        ("order status #31", Track(31)),
        ("оператор", HandoffRequest()),
        ("Оператор!", HandoffRequest()),
        ("OPERATOR", HandoffRequest()),
        ("менеджер", HandoffRequest()),
        ("manager", HandoffRequest()),
        ("живой человек", HandoffRequest()),
        ("/operator", HandoffRequest()),
        # Only whole messages: answers that merely contain the words go to the dialog.
        ("ул. Операторская 5", None),
        ("позвоните менеджеру в 5 вечера", None),
        ("статус заказа очень важен", None),
        ("/start", None),
        ("2", None),
        ("", None),
    ],
)
def test_classify(text: str, expected: object) -> None:
    assert classify(text) == expected


def test_status_notification_uses_the_flow_text_in_the_order_language() -> None:
    assert "7" in status_notification(WATER, "ready", "ru", order_id=7)
    assert status_notification(WATER, "ready", "en", order_id=7) != status_notification(
        WATER, "ready", "ru", order_id=7
    )
    # A note is internal unless the flow's text asks for {note}.
    assert "secret" not in status_notification(WATER, "cancelled", "en", order_id=7, note="secret")


def test_tracking_answers() -> None:
    orders = [
        OrderSummary(12, 1_700_000_000.0, "ready", Decimal("1800.00"), "KGS"),
        OrderSummary(9, 1_690_000_000.0, "delivered", quantity=3),
    ]
    listed = render_order_list(WATER, orders, "en")
    assert "#12" in listed and "#9" in listed and "× 3" in listed
    assert render_order_list(WATER, [], "ru") == "У вас пока нет заказов."
    one = render_order(
        PRINTING,
        orders[0],
        [
            HistoryEntry(1_700_000_100.0, "new", "confirmed"),
            HistoryEntry(1_700_000_200.0, "confirmed", "in_progress"),
        ],
        "en",
    )
    assert "#12" in one and "confirmed" in one and "in progress" in one
    assert "99" in render_not_found(WATER, 99, "en")


def _flow_with(tmp_path: Path, extra: str) -> Path:
    source = (FLOWS_DIR / "water.yaml").read_text(encoding="utf-8")
    path = tmp_path / "flow.yaml"
    path.write_text(source + "\n" + extra, encoding="utf-8")
    return path


def test_flows_may_set_tracking_and_status_texts_and_flow_check_is_strict(tmp_path: Path) -> None:
    good = _flow_with(
        tmp_path,
        'status_texts:\n  ready:\n    ru: "Заказ {order_id}: {status}. {note}"\n    en: "Order {order_id}: {status}. {note}"\n'
        'status_names:\n  ready:\n    ru: "можно забирать"\n    en: "ready for pickup"\n',
    )
    flow = load_flow(good)
    assert (
        status_notification(flow, "ready", "en", order_id=3, note="door 2")
        == "Order 3: ready for pickup. door 2"
    )
    with pytest.raises(FlowError, match="status_texts: unknown key 'shipped'"):
        load_flow(_flow_with(tmp_path, 'status_texts:\n  shipped:\n    ru: "a"\n    en: "b"\n'))
    with pytest.raises(FlowError, match=r"status_names.ready.en: unknown placeholder \{note\}"):
        load_flow(_flow_with(tmp_path, 'status_names:\n  ready:\n    ru: "a"\n    en: "{note}"\n'))
    with pytest.raises(FlowError, match="missing text for language 'en'"):
        load_flow(_flow_with(tmp_path, 'status_texts:\n  ready:\n    ru: "a"\n'))


@pytest.mark.parametrize("command", [["orders", "set-status"], ["handback"]])
def test_new_commands_have_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_tracking_times_are_in_the_shops_zone(settings: Settings) -> None:
    """A customer in Bishkek reads the time of their order in Bishkek (SHOP_TIMEZONE), not UTC:
    1_700_000_000 is 14.11.2023 22:13 UTC, 15.11.2023 04:13 in Asia/Bishkek."""
    from orderbot.runtime.base import dialog_options

    order = OrderSummary(12, 1_700_000_000.0, "ready", quantity=2)
    history = [HistoryEntry(1_700_000_100.0, "new", "confirmed")]
    local = render_order(WATER, order, history, "en", "Asia/Bishkek")
    assert "15.11.2023 04:13 —" in local and "UTC" not in local
    assert "15.11.2023" in render_order_list(WATER, [order], "en", "Asia/Bishkek")
    assert "14.11.2023 22:13 UTC —" in render_order(WATER, order, history, "en")
    options = dialog_options(settings.model_copy(update={"shop_timezone": "Asia/Bishkek"}))
    assert options.shop_timezone == "Asia/Bishkek"
