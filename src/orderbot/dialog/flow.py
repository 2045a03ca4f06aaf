"""A loaded flow as the engine sees it: :class:`Flow` with its :class:`Step` objects and its
optional :class:`Catalog`, the order statuses, the optional global texts, and the ``{name}``
placeholders texts may hold.

Separate from loading (:mod:`orderbot.dialog.loader`, :mod:`orderbot.dialog.flow_parts`): the
dialog only reads these immutable objects and never needs the YAML checks behind them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as _default
from decimal import Decimal
from typing import Any, Literal

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "OPTIONAL_TEXTS",
    "BusinessHours",
    "Catalog",
    "CatalogEntry",
    "FaqEntry",
    "Flow",
    "Step",
    "Texts",
    "placeholders",
]

ORDER_ID = "order_id"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Optional global texts (tracking, handoff) and the placeholders each may use besides vars.
OPTIONAL_TEXTS: Mapping[str, frozenset[str]] = {
    "track_header": frozenset(),
    "track_line": frozenset({"order_id", "date", "status", "total"}),
    "track_empty": frozenset(),
    "track_not_found": frozenset({"number"}),
    "track_order": frozenset({"order_id", "date", "status", "total", "history"}),
    "handoff_started": frozenset(),
    "handoff_unavailable": frozenset(),
    "handoff_resumed": frozenset(),
    "services": frozenset(),
    "catalog_header": frozenset(),
    "catalog_item": frozenset({"name", "description", "price", "unit"}),
    "catalog_order_button": frozenset({"name"}),
    "catalog_page": frozenset({"page", "pages"}),
    "catalog_prev": frozenset(),
    "catalog_next": frozenset(),
    "catalog_pick_numbers": frozenset(),
    "catalog_pick_names": frozenset(),
    "catalog_more": frozenset(),
    "catalog_chosen": frozenset({"name", "price"}),
    "order_in_progress": frozenset(),
    # How the bot says what it read (see orderbot/dialog/notes.py for the defaults).
    "details_noted": frozenset({"details"}),
    "details_changed": frozenset({"details"}),
    "change_field": frozenset({"field"}),
    "edit_hint": frozenset({"fields"}),
    "question_unknown": frozenset(),
    # The one reminder of an unfinished dialog (orderbot/dialog/reminder.py).
    "reminder": frozenset(),
    "stale_button": frozenset(),
    "media_caption": frozenset(),
    "language_switched": frozenset(),
    "closed_note": frozenset({"when"}),
    # Offered to a returning customer after the greeting; may also use every {field}.
    "repeat_offer": frozenset(),
}
DEFAULT_PAGE_SIZE = 5

Texts = Mapping[str, str]
"""One text in every language of the flow: ``{"ru": ..., "en": ...}``."""


def placeholders(text: str) -> set[str]:
    """The ``{name}`` placeholders in a text."""
    return set(_PLACEHOLDER.findall(text))


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a flow: a question (``validator`` set) or an end (``end`` set)."""

    name: str
    prompt: Texts = _default(default_factory=dict)
    validator: str | None = None
    params: Mapping[str, Any] = _default(default_factory=dict)
    field: str | None = None
    errors: Mapping[str, Texts] = _default(default_factory=dict)
    next: str | Mapping[str, str] | None = None
    buttons: Mapping[str, tuple[str, ...]] = _default(default_factory=dict)
    skip: Mapping[str, tuple[str, ...]] = _default(default_factory=dict)
    help: Texts = _default(default_factory=dict)
    returns_to: str | None = None
    messages: Mapping[str, Texts] = _default(default_factory=dict)
    labels: Mapping[str, tuple[str, ...]] = _default(default_factory=dict)
    """Words that name the step's field in a message ("Адрес: ...", "change the phone to ...");
    the first of a language is how a reply names it."""
    units: Mapping[str, tuple[str, ...]] = _default(default_factory=dict)
    """A quantity step: unit words that make a number anywhere in a message its answer
    ("3 бутыли", "алты бөтөлкө")."""
    end: Literal["completed", "cancelled"] | None = None
    text: Texts = _default(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One thing a customer can order; ``price`` is per ``unit``, in the catalog's currency."""

    id: str
    name: Texts
    description: Texts
    price: Decimal
    unit: Texts


@dataclass(frozen=True, slots=True)
class Catalog:
    """A flow's catalog: its items in display order, and how an order counts them."""

    items: tuple[CatalogEntry, ...]
    currency: str
    currency_name: Texts
    field: str
    quantity_field: str | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    """How many items one page of the /services listing shows."""

    def get(self, item_id: object) -> CatalogEntry | None:
        """The item with ``item_id``, or ``None``."""
        return next((item for item in self.items if item.id == item_id), None)


@dataclass(frozen=True, slots=True)
class FaqEntry:
    """A question the bot answers itself: any of its ``keywords`` (word beginnings, by
    language) in a customer's question picks ``answer``."""

    keywords: Mapping[str, tuple[str, ...]]
    answer: Texts


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """When the shop delivers: ``week`` has one ``(opens, closes)`` pair of minutes after
    midnight per weekday (Monday first; None: closed), ``holidays`` ISO dates closed all day,
    in the IANA ``timezone``."""

    timezone: str
    week: tuple[tuple[int, int] | None, ...]
    holidays: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Flow:
    """A loaded, checked flow. Treat it as read-only; it is shared by every dialog."""

    name: str
    languages: tuple[str, ...]
    start: str
    steps: Mapping[str, Step]
    texts: Mapping[str, Texts]
    vars: Mapping[str, str] = _default(default_factory=dict)
    cancel_words: tuple[str, ...] = ()
    restart_words: tuple[str, ...] = ()
    back_label: Texts = _default(default_factory=dict)
    cancel_label: Texts = _default(default_factory=dict)
    back_words: tuple[str, ...] = ()
    catalog: Catalog | None = None
    status_texts: Mapping[str, Texts] = _default(default_factory=dict)
    status_names: Mapping[str, Texts] = _default(default_factory=dict)
    faq: tuple[FaqEntry, ...] = ()
    hours: BusinessHours | None = None
    partial_languages: tuple[str, ...] = ()
    """Languages the flow speaks besides ``languages`` whose texts may be missing in the file
    (the loader fills them with the first language's): every text has them all."""

    @property
    def spoken(self) -> tuple[str, ...]:
        """Every language the flow answers in: ``languages`` then ``partial_languages``."""
        return self.languages + self.partial_languages

    def language(self, wanted: str) -> str:
        """``wanted`` if the flow speaks it, else the flow's first language."""
        return wanted if wanted in self.spoken else self.languages[0]

    def text(self, key: str, language: str) -> str:
        """The global text ``key`` in ``language`` (or the flow's first language)."""
        return self.texts[key][self.language(language)]
