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
    "Catalog",
    "CatalogEntry",
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

    def language(self, wanted: str) -> str:
        """``wanted`` if the flow speaks it, else the flow's first language."""
        return wanted if wanted in self.languages else self.languages[0]

    def text(self, key: str, language: str) -> str:
        """The global text ``key`` in ``language`` (or the flow's first language)."""
        return self.texts[key][self.language(language)]
