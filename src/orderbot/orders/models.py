"""Orders as values: the record a dialog step stores (:class:`OrderRecord` with its items and
files), and the read models operators and customers see (:class:`Order`, :class:`OrderSummary`,
:class:`HistoryEntry`). Pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "ORDER_ID_PLACEHOLDER",
    "HistoryEntry",
    "Order",
    "OrderFile",
    "OrderItem",
    "OrderRecord",
    "OrderSummary",
    "order_parts",
]

ORDER_ID_PLACEHOLDER = "{order_id}"


@dataclass(frozen=True, slots=True)
class OrderRecord:
    idempotency_key: str
    channel: str
    client_id: str
    source: str
    phone: str | None
    address: str | None
    quantity: int | None
    language: str
    data: dict[str, Any] = field(default_factory=dict)
    items: tuple[OrderItem, ...] = ()  # catalog line items -> order_items
    total: str | None = None  # exact decimal, e.g. "1800.00"
    currency: str | None = None
    files: tuple[OrderFile, ...] = ()  # stored model files -> order_files
    route: dict[str, str] = field(default_factory=dict)  # to reach the customer again


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One line of an order: ``quantity`` x ``unit_price`` (a decimal string) of a catalog item."""

    item_id: str
    name: str
    quantity: int
    unit_price: str
    unit: str = ""


@dataclass(frozen=True, slots=True)
class OrderFile:
    """A stored model file linked to an order (``path`` is where ``orderbot.files.receiver``
    put it)."""

    name: str
    checksum: str
    size: int
    format: str
    path: str


def order_parts(data: Mapping[str, Any]) -> dict[str, Any]:
    """``items``, ``total``, ``currency`` and ``files`` for an :class:`OrderRecord`, from the
    order data a dialog collected (``CreateOrder.data``); malformed entries are left out."""
    items = tuple(
        OrderItem(
            item_id=str(line["id"]),
            name=str(line.get("name", "")),
            quantity=int(line["quantity"]),
            unit_price=str(line["unit_price"]),
            unit=str(line.get("unit", "")),
        )
        for line in data.get("items") or ()
        if isinstance(line, Mapping) and {"id", "quantity", "unit_price"} <= set(line)
    )
    files = tuple(
        OrderFile(
            name=str(f.get("name", "")),
            checksum=f["checksum"],
            size=int(f.get("size", 0)),
            format=str(f.get("format", "")),
            path=str(f.get("path", "")),
        )
        for f in data.get("files") or ()
        if isinstance(f, Mapping) and isinstance(f.get("checksum"), str) and f["checksum"]
    )
    total = data.get("total")
    currency = data.get("currency")
    return {
        "items": items,
        "total": str(total) if total is not None and items else None,
        "currency": str(currency) if currency is not None and items else None,
        "files": files,
    }


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    client_id: str
    channel: str
    source: str
    phone: str | None
    address: str | None
    quantity: int | None
    status: str
    language: str
    created_at: str  # ISO 8601, UTC
    updated_at: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class OrderSummary:
    """What a tracking answer shows of one order."""

    id: int
    created_at: float
    status: str
    total: Decimal | None = None
    currency: str | None = None
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    created_at: float
    from_status: str | None
    to_status: str
    note: str = ""
