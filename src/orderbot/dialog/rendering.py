"""What a reply says: a step's question with the collected answers filled in, the order lines
and total of a catalog order, and buttons as numbered text for channels without them.

Templates in a flow name values (``{phone}``, ``{order_lines}``, ``{total}``); building those
values is the one place that knows how each kind of answer reads to a customer (a choice by its
button label, a list of files by their names, money in the catalog's currency), so every prompt,
summary and refusal shows them alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from orderbot.dialog.flow import Catalog, Flow, Step
from orderbot.dialog.models import Reply
from orderbot.dialog.navigation import step_buttons
from orderbot.dialog.wording import money as _money
from orderbot.dialog.wording import render as _render

__all__ = [
    "line_total",
    "order_lines",
    "render_buttons_as_text",
    "render_prompt",
    "summary_values",
    "with_prompt",
]


def render_buttons_as_text(reply: Reply) -> str:
    """The reply for channels without buttons: its text, then the labels numbered.

    The engine accepts the bare number ("2") as the label, so customers can answer with it.
    """
    if not reply.buttons:
        return reply.text
    lines = [f"{index}. {label}" for index, label in enumerate(reply.buttons, start=1)]
    return reply.text + "\n\n" + "\n".join(lines)


def _display(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        names = [str(v["name"]) if isinstance(v, dict) and "name" in v else str(v) for v in value]
        return ", ".join(names) if names else "—"
    return str(value)


def _quantity(catalog: Catalog, data: Mapping[str, Any]) -> int:
    if catalog.quantity_field is None:
        return 1
    counted = data.get(catalog.quantity_field)
    if isinstance(counted, list):
        return max(1, len(counted))
    if isinstance(counted, int) and not isinstance(counted, bool) and counted > 0:
        return counted
    return 1


def order_lines(flow: Flow, data: Mapping[str, Any], language: str) -> list[dict[str, Any]]:
    """The line items of an order with ``data`` (empty without a catalog or a chosen item):
    ``[{id, name, quantity, unit_price, unit}]``, prices as exact decimal strings."""
    catalog = flow.catalog
    item = catalog.get(data.get(catalog.field)) if catalog is not None else None
    if catalog is None or item is None:
        return []
    language = flow.language(language)
    return [
        {
            "id": item.id,
            "name": item.name[language],
            "quantity": _quantity(catalog, data),
            "unit_price": str(item.price.quantize(Decimal("0.01"))),
            "unit": item.unit[language],
        }
    ]


def line_total(line: Mapping[str, Any]) -> Decimal:
    return Decimal(line["unit_price"]) * int(line["quantity"])


def _catalog_values(flow: Flow, data: Mapping[str, Any], language: str) -> dict[str, str]:
    catalog = flow.catalog
    assert catalog is not None
    currency = catalog.currency_name[language]
    listing = [
        f"{index}. {item.name[language]} — {_money(item.price)} {currency} / {item.unit[language]}"
        f"\n{item.description[language]}"
        for index, item in enumerate(catalog.items, start=1)
    ]
    lines = order_lines(flow, data, language)
    rendered = [
        f"{line['name']}: {line['quantity']} × {_money(Decimal(line['unit_price']))} {currency}"
        f" = {_money(line_total(line))} {currency}"
        for line in lines
    ]
    total = sum((line_total(line) for line in lines), Decimal(0))
    return {
        "catalog": "\n".join(listing),
        "order_lines": "\n".join(rendered) if rendered else "—",
        "total": f"{_money(total)} {currency}" if lines else "—",
        "currency": currency,
    }


def _choice_label(step: Step, value: object, language: str) -> str | None:
    """The button label of a choice step's value (``"PETG"`` for ``petg``), if it has one."""
    if step.validator != "catalog_choice":
        return None
    items = step.params.get("items", [])
    labels = step.buttons.get(language, ())
    if len(labels) != len(items):
        return None
    for item, label in zip(items, labels, strict=True):
        if item.get("id") == value:
            return label
    return None


def summary_values(
    flow: Flow, current: Step | None, data: Mapping[str, Any], language: str
) -> dict[str, str]:
    values = dict(flow.vars)
    if current is not None:
        values |= {
            key: str(value)
            for key, value in current.params.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool)
        }
    for other in flow.steps.values():
        if other.field is not None:
            values.setdefault(other.field, "—")  # a field not (or no longer) collected
    values |= {key: _display(value) for key, value in data.items()}
    for other in flow.steps.values():
        if other.field is not None and other.field in data:
            label = _choice_label(other, data[other.field], language)
            if label is not None:
                values[other.field] = label
    if flow.catalog is not None:
        values |= _catalog_values(flow, data, language)
    return values


def render_prompt(
    flow: Flow,
    current: Step,
    language: str,
    data: Mapping[str, Any],
    return_to: str | None = None,
) -> Reply:
    text = _render(current.prompt[language], summary_values(flow, current, data, language))
    return Reply(text, step_buttons(flow, current, language, data, return_to))


def with_prompt(
    flow: Flow,
    current: Step,
    language: str,
    data: Mapping[str, Any],
    before: str,
    return_to: str | None = None,
) -> Reply:
    prompt = render_prompt(flow, current, language, data, return_to)
    text = _render(before, summary_values(flow, current, data, language))
    return Reply(f"{text}\n\n{prompt.text}", prompt.buttons)
