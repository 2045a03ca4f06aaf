"""Named, reusable validators: each turns what a customer wrote into a normalised value or a
reason code, and the flow picks the re-ask text for that reason.

A validator never guesses. "1.5" is not 15 and "2 or 3" is not 23: anything ambiguous comes
back as an :class:`Invalid` with a specific reason, so the customer is asked again precisely.

Flows refer to validators by name through :data:`VALIDATORS`; the plain ``parse_*`` functions
are usable on their own (and are what the table tests exercise).

This module is the registry: each validator's params check and how it runs a parser. The
parsers live by kind in :mod:`orderbot.dialog.validators.contacts` (address, phone, e-mail),
:mod:`orderbot.dialog.validators.quantities` (whole numbers) and
:mod:`orderbot.dialog.validators.choices` (yes/no, catalog choice, model files commands); the
shared types in :mod:`orderbot.dialog.validators.base`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orderbot.dialog.validators.base import (
    ValidationContext,
    ValidationResult,
    Validator,
)
from orderbot.dialog.validators.choices import (
    FILE_REASONS,
    CatalogItem,
    parse_catalog_choice,
    parse_files_command,
    parse_yes_no,
)
from orderbot.dialog.validators.contacts import parse_address, parse_email, parse_phone
from orderbot.dialog.validators.quantities import parse_integer

__all__ = ["VALIDATORS"]


# --------------------------------------------------------------------------------------------
# the registry


def _no_params(params: Mapping[str, Any]) -> None:
    if params:
        raise ValueError(f"takes no params, got {sorted(params)}")


def _only(params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"unknown params {sorted(unknown)} (allowed: {sorted(allowed)})")


def _int_param(params: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"param {name!r} must be an integer, got {value!r}")
    return value


def _check_address(params: Mapping[str, Any]) -> None:
    _only(params, {"min_length", "max_length"})
    low = _int_param(params, "min_length", 5)
    high = _int_param(params, "max_length", 200)
    if low is None or high is None or not 0 < low <= high:
        raise ValueError("needs 0 < min_length <= max_length")


def _run_address(text: str, ctx: ValidationContext) -> ValidationResult:
    return parse_address(
        text,
        min_length=int(ctx.params.get("min_length", 5)),
        max_length=int(ctx.params.get("max_length", 200)),
    )


def _check_integer(params: Mapping[str, Any]) -> None:
    _only(params, {"min", "max"})
    low = _int_param(params, "min", 1)
    high = _int_param(params, "max", None)
    if low is None or (high is not None and high < low):
        raise ValueError("needs min <= max")


def _run_integer(text: str, ctx: ValidationContext) -> ValidationResult:
    high = ctx.params.get("max")
    return parse_integer(
        text, minimum=int(ctx.params.get("min", 1)), maximum=None if high is None else int(high)
    )


def _catalog_items(params: Mapping[str, Any]) -> list[CatalogItem]:
    raw = params.get("items")
    if not isinstance(raw, list) or not raw:
        raise ValueError("param 'items' must be a non-empty list")
    items = []
    for entry in raw:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            raise ValueError("each item needs a string 'id'")
        names = entry.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"item {entry['id']!r}: 'names' must be a list of strings")
        items.append(CatalogItem(id=entry["id"], names=tuple(names)))
    return items


def _check_catalog(params: Mapping[str, Any]) -> None:
    _only(params, {"items"})
    _catalog_items(params)


def _run_catalog(text: str, ctx: ValidationContext) -> ValidationResult:
    items = _catalog_items(ctx.params)
    if len(ctx.buttons) == len(items):
        # The step's button labels (in the dialog's language) name the items too.
        items = [
            CatalogItem(item.id, (*item.names, label))
            for item, label in zip(items, ctx.buttons, strict=True)
        ]
    return parse_catalog_choice(text, items)


def _check_files(params: Mapping[str, Any]) -> None:
    _only(params, {"max_files"})
    high = _int_param(params, "max_files", 10)
    if high is None or high < 1:
        raise ValueError("max_files must be at least 1")


_INTEGER_REASONS = frozenset(
    {"not_a_number", "decimal", "negative", "range", "too_small", "too_large"}
)

VALIDATORS: dict[str, Validator] = {
    validator.name: validator
    for validator in (
        Validator(
            "address",
            _run_address,
            frozenset({"too_short", "too_long", "no_letters"}),
            _check_address,
        ),
        Validator(
            "phone",
            lambda text, ctx: parse_phone(text, region=ctx.phone_region),
            frozenset({"invalid"}),
            _no_params,
        ),
        # "quantity" and "integer" read the same way; two names keep flows self-explanatory.
        Validator("quantity", _run_integer, _INTEGER_REASONS, _check_integer),
        Validator("integer", _run_integer, _INTEGER_REASONS, _check_integer),
        Validator(
            "yes_no",
            lambda text, ctx: parse_yes_no(text, buttons=ctx.buttons),
            frozenset({"unclear"}),
            _no_params,
            lambda params: frozenset({"yes", "no"}),
        ),
        Validator("email", lambda text, ctx: parse_email(text), frozenset({"invalid"}), _no_params),
        # A person's name reads like a short address: trimmed, bounded, with letters in it.
        Validator(
            "person_name",
            lambda text, ctx: parse_address(
                text,
                min_length=int(ctx.params.get("min_length", 2)),
                max_length=int(ctx.params.get("max_length", 100)),
            ),
            frozenset({"too_short", "too_long", "no_letters"}),
            _check_address,
        ),
        Validator(
            "catalog_choice",
            _run_catalog,
            frozenset({"unknown_choice"}),
            _check_catalog,
            lambda params: frozenset(item.id for item in _catalog_items(params)),
        ),
        # Model files arrive as attachments, which the engine takes; as text the step only
        # understands "continue" and "remove the last one".
        Validator(
            "model_files",
            lambda text, ctx: parse_files_command(text, buttons=ctx.buttons),
            FILE_REASONS,
            _check_files,
        ),
    )
}
"""Every validator a flow may name, by name."""
