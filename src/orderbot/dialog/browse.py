"""The catalog as the customer browses it (``/services``): pages of cards or a numbered list,
and what a message means while browsing. Pure; the engine decides what happens with it.

* **Buttons** (Telegram): a header, then one card per item (name, price and unit, description)
  with its own "Order" button, then "‹ Prev" / "Next ›" when there are more pages. A pressed
  button comes back as its label, so every order button names its item ("🛒 Order: FDM
  printing"): a card's button is told apart from the others by its label alone, whichever
  page it was on and however old the message is.
* **No buttons** (Chat2Desk): one message per page, the items numbered through all pages (page
  two starts at 6), with a hint: reply with the number or the name, "more" for the next page.
  Numbers only count where they cannot mean something else: when the question re-asked after
  the list shows numbered options of its own, the list is bulleted and only names count.

The page shown last is kept in the dialog state (``catalog_page``) until the next message, so
"more", "2" or a name right after the list refer to it; a button works at any time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from orderbot.dialog.flow import Catalog, CatalogEntry, Flow
from orderbot.dialog.wording import money, phrase, phrases, render

__all__ = [
    "DEFAULT_TEXTS",
    "MORE_WORDS",
    "SERVICES_WORDS",
    "PickItem",
    "ShowPage",
    "browse_text",
    "clamp_page",
    "listing",
    "order_button",
    "page_count",
    "price",
    "read",
]

SERVICES_WORDS = ("услуги", "каталог", "прайс", "цены", "services", "catalog", "prices")
"""Whole messages that ask for the catalog, like ``/services``."""
MORE_WORDS = ("ещё", "дальше", "далее", "следующие", "more", "next")
"""Whole messages that ask for the next page, right after a page was shown."""

DEFAULT_TEXTS: Mapping[str, Mapping[str, str]] = {
    "services": {
        "ru": "Мы принимаем заказы прямо здесь, в чате. Чтобы оформить заказ, отправьте /order.",
        "en": "We take orders right here in the chat. To place one, send /order.",
    },
    "catalog_header": {"ru": "Наши услуги и цены:", "en": "Our services and prices:"},
    "catalog_item": {
        "ru": "{name} — {price} / {unit}\n{description}",
        "en": "{name} — {price} / {unit}\n{description}",
    },
    "catalog_order_button": {"ru": "🛒 Заказать: {name}", "en": "🛒 Order: {name}"},
    "catalog_page": {"ru": "Страница {page} из {pages}", "en": "Page {page} of {pages}"},
    "catalog_prev": {"ru": "‹ Предыдущие", "en": "‹ Prev"},
    "catalog_next": {"ru": "Следующие ›", "en": "Next ›"},
    "catalog_pick_numbers": {
        "ru": "Чтобы заказать, ответьте номером или названием услуги.",
        "en": "To order, reply with the number or the name of a service.",
    },
    "catalog_pick_names": {
        "ru": "Чтобы заказать, напишите название услуги.",
        "en": "To order one, reply with its name.",
    },
    "catalog_more": {"ru": "«ещё» — следующая страница.", "en": '"more" shows the next page.'},
    "catalog_chosen": {"ru": "Вы выбрали: {name}.", "en": "You chose: {name}."},
    "order_in_progress": {
        "ru": "Заказ уже оформляется. Чтобы начать заново, отправьте /order ещё раз; "
        "или продолжим:",
        "en": "An order is already being placed. To start over, send /order again; or let's go on:",
    },
}
_NUMBER = re.compile(r"\s*(\d{1,3})\s*[.)]?\s*")


@dataclass(frozen=True, slots=True)
class ShowPage:
    """Show page ``page`` (from 0) of the catalog."""

    page: int


@dataclass(frozen=True, slots=True)
class PickItem:
    """Order ``item``."""

    item: CatalogEntry


def browse_text(
    flow: Flow, key: str, language: str, values: Mapping[str, str] | None = None
) -> str:
    """The flow's text ``key`` (or the default) in ``language``, with ``values`` and vars."""
    texts = flow.texts.get(key) or DEFAULT_TEXTS[key]
    language = flow.language(language)
    template = texts.get(language) or texts.get("en") or next(iter(texts.values()))
    return render(template, {**flow.vars, **(values or {})})


def page_count(catalog: Catalog) -> int:
    """How many pages the catalog's listing has."""
    return -(-len(catalog.items) // catalog.page_size)


def clamp_page(catalog: Catalog, page: int) -> int:
    """``page`` within the catalog's pages."""
    return max(0, min(page, page_count(catalog) - 1))


def price(flow: Flow, item: CatalogEntry, language: str) -> str:
    """``600 сом``: the item's price in the catalog's currency as the customer reads it."""
    assert flow.catalog is not None
    return f"{money(item.price)} {flow.catalog.currency_name[flow.language(language)]}"


def order_button(flow: Flow, item: CatalogEntry, language: str) -> str:
    """The label of ``item``'s order button (it names the item: see the module docstring)."""
    return browse_text(flow, "catalog_order_button", language, {"name": item.name[language]})


def _labels(flow: Flow, key: str) -> set[str]:
    return {browse_text(flow, key, language).strip() for language in flow.spoken}


def read(flow: Flow, text: str, page: int | None, *, numbers: bool) -> ShowPage | PickItem | None:
    """What ``text`` means for browsing, or None (it is for the dialog).

    ``page`` is the page shown just before (None: the last message was not a listing); only
    then do "more", an item's name and (with ``numbers``) its number count. A button (an
    order button, "‹ Prev", "Next ›") counts at any time: its exact label comes back when it
    is pressed, and nobody types "🛒 Order: FDM printing" as an answer to another question.
    """
    catalog = flow.catalog
    stripped = text.strip()
    if catalog is None or not stripped:
        return None
    shown = page or 0
    if stripped in _labels(flow, "catalog_next"):
        return ShowPage(clamp_page(catalog, shown + 1))
    if stripped in _labels(flow, "catalog_prev"):
        return ShowPage(clamp_page(catalog, shown - 1))
    said = phrase(stripped)
    for item in catalog.items:
        if said in {phrase(order_button(flow, item, lang)) for lang in flow.spoken}:
            return PickItem(item)
    if page is None:
        return None
    if said in phrases(MORE_WORDS):
        return ShowPage(clamp_page(catalog, page + 1))
    number = _NUMBER.fullmatch(stripped)
    if numbers and number is not None and 1 <= int(number.group(1)) <= len(catalog.items):
        return PickItem(catalog.items[int(number.group(1)) - 1])
    for item in catalog.items:
        if said in {phrase(name) for name in item.name.values()}:
            return PickItem(item)
    return None


def _card(flow: Flow, item: CatalogEntry, language: str) -> str:
    values = {
        "name": item.name[language],
        "description": item.description[language],
        "price": price(flow, item, language),
        "unit": item.unit[language],
    }
    return browse_text(flow, "catalog_item", language, values)


def listing(
    flow: Flow, language: str, page: int, *, buttons: bool, numbered: bool
) -> list[tuple[str, tuple[str, ...]]]:
    """Page ``page`` of the catalog as messages ``(text, button labels)``: cards with order
    buttons (``buttons``), else one text, numbered through all pages (``numbered``) or
    bulleted."""
    catalog = flow.catalog
    assert catalog is not None
    language = flow.language(language)
    page = clamp_page(catalog, page)
    pages = page_count(catalog)
    first = page * catalog.page_size
    items = catalog.items[first : first + catalog.page_size]
    header = browse_text(flow, "catalog_header", language)
    where = browse_text(
        flow, "catalog_page", language, {"page": str(page + 1), "pages": str(pages)}
    )
    if buttons:
        messages: list[tuple[str, tuple[str, ...]]] = [(header, ())]
        messages += [
            (_card(flow, item, language), (order_button(flow, item, language),)) for item in items
        ]
        if pages > 1:
            navigation: tuple[str, ...] = ()
            if page > 0:
                navigation += (browse_text(flow, "catalog_prev", language),)
            if page < pages - 1:
                navigation += (browse_text(flow, "catalog_next", language),)
            messages.append((where, navigation))
        return messages
    lines = [
        f"{first + index}. {_card(flow, item, language)}"
        if numbered
        else f"• {_card(flow, item, language)}"
        for index, item in enumerate(items, start=1)
    ]
    hints = [
        browse_text(flow, "catalog_pick_numbers" if numbered else "catalog_pick_names", language)
    ]
    if page < pages - 1:
        hints.append(browse_text(flow, "catalog_more", language))
    parts = [header, "\n\n".join(lines), " ".join(hints)]
    if pages > 1:
        parts.insert(2, where)
    return [("\n\n".join(parts), ())]
