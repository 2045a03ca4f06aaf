"""Reading and checking the parts of a flow file: the YAML shapes (mappings, strings, texts in
every language, word lists), the status texts, the catalog, each step, a branching ``next`` and
the placeholders a step's texts may use.

Separate from :mod:`orderbot.dialog.loader`, which reads the file and puts the parts together
(:func:`~orderbot.dialog.loader.load_flow`): each check here reports a :class:`Problem` naming
the key, and ``load_flow`` puts the file name in front of it.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from orderbot.dialog.flow import (
    DEFAULT_PAGE_SIZE,
    ORDER_ID,
    BusinessHours,
    Catalog,
    CatalogEntry,
    FaqEntry,
    Step,
    Texts,
    placeholders,
)
from orderbot.dialog.validators.registry import VALIDATORS
from orderbot.orders.status import STATUSES

__all__ = [
    "Languages",
    "Problem",
    "check_branches",
    "check_placeholders",
    "parse_business_hours",
    "parse_catalog",
    "parse_faq",
    "parse_status_texts",
    "parse_step",
    "parse_texts",
    "placeholders_known",
    "require_mapping",
    "require_string",
    "unknown_keys",
    "word_lists",
]

_STEP_KEYS = {
    "prompt",
    "validator",
    "params",
    "field",
    "errors",
    "next",
    "buttons",
    "skip",
    "help",
    "returns_to",
    "messages",
    "labels",
    "units",
}
# Texts a validator's step needs besides its errors, by validator.
_STEP_MESSAGES = {"model_files": frozenset({"received", "removed"})}
# Placeholders the engine fills on a validator's step, besides fields, vars and params.
_STEP_VALUES = {"model_files": frozenset({"file_name", "file_count", "limit_mb"})}
_CATALOG_KEYS = {"file", "items", "currency", "currency_name", "field", "quantity", "page_size"}
_END_KEYS = {"end", "text"}


class Problem(Exception):
    """A flow inconsistency, before the file name is put in front of it."""


def require_mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Problem(f"{where}: must be a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise Problem(f"{where}: keys must be strings, got {key!r}")
    return value


def require_string(value: object, where: str) -> str:
    if isinstance(value, bool):
        # YAML 1.1 reads unquoted yes/no/on/off as booleans: a classic trap in button labels.
        raise Problem(f"{where}: must be a string, got {value!r} (quote yes/no/on/off in YAML)")
    if not isinstance(value, str) or not value.strip():
        raise Problem(f"{where}: must be a non-empty string")
    return value


def unknown_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise Problem(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


class Languages(tuple[str, ...]):
    """A flow's languages as the checks see them: the declared ones (every text required),
    then the partial ones (a missing text is the first language's)."""

    partial: frozenset[str]

    def __new__(cls, declared: tuple[str, ...], partial: tuple[str, ...] = ()) -> Languages:
        made = super().__new__(cls, (*declared, *partial))
        made.partial = frozenset(partial)
        return made


def _partial(languages: tuple[str, ...]) -> frozenset[str]:
    return languages.partial if isinstance(languages, Languages) else frozenset()


def parse_texts(value: object, languages: tuple[str, ...], where: str) -> dict[str, str]:
    data = require_mapping(value, where)
    partial = _partial(languages)
    for language in languages:
        if language not in data and language not in partial:
            raise Problem(f"{where}: missing text for language {language!r}")
    extra = sorted(set(data) - set(languages))
    if extra:
        raise Problem(f"{where}: language {extra[0]!r} is not in the flow's languages")
    first = languages[0]
    return {
        language: require_string(
            data[language if language in data else first], f"{where}.{language}"
        )
        for language in languages
    }


def word_lists(value: object, languages: tuple[str, ...], where: str) -> dict[str, tuple[str, ...]]:
    data = require_mapping(value, where)
    result: dict[str, tuple[str, ...]] = {}
    for language, words in data.items():
        if language not in languages:
            raise Problem(f"{where}: language {language!r} is not in the flow's languages")
        if not isinstance(words, list) or not words:
            raise Problem(f"{where}.{language}: must be a non-empty list of strings")
        result[language] = tuple(require_string(w, f"{where}.{language}") for w in words)
    return result


def parse_status_texts(
    value: object, languages: tuple[str, ...], where: str
) -> dict[str, dict[str, str]]:
    data = require_mapping(value, where)
    unknown_keys(data, set(STATUSES), where)
    return {status: parse_texts(t, languages, f"{where}.{status}") for status, t in data.items()}


def parse_catalog(value: object, languages: tuple[str, ...], base_dir: Path) -> Catalog:
    data = dict(require_mapping(value, "catalog"))
    unknown_keys(data, _CATALOG_KEYS, "catalog")
    if "file" in data:
        file = base_dir / require_string(data.pop("file"), "catalog.file")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise Problem(f"catalog.file: cannot read {file}: {exc}") from None
        loaded = require_mapping(loaded, f"catalog file {file.name}")
        unknown_keys(loaded, {"items", "currency", "currency_name"}, f"catalog file {file.name}")
        data = {**loaded, **data}
    for key in ("items", "currency", "field"):
        if key not in data:
            raise Problem(f"catalog: missing key {key!r}")
    currency = require_string(data["currency"], "catalog.currency")
    if not isinstance(data["items"], list) or not data["items"]:
        raise Problem("catalog.items: must be a non-empty list")
    items: list[CatalogEntry] = []
    for index, raw_item in enumerate(data["items"]):
        where = f"catalog.items[{index}]"
        item = require_mapping(raw_item, where)
        unknown_keys(item, {"id", "name", "description", "price", "unit"}, where)
        for key in ("id", "name", "description", "price", "unit"):
            if key not in item:
                raise Problem(f"{where}: missing key {key!r}")
        item_id = require_string(item["id"], f"{where}.id")
        if any(existing.id == item_id for existing in items):
            raise Problem(f"{where}.id: {item_id!r} is listed twice")
        items.append(
            CatalogEntry(
                id=item_id,
                name=parse_texts(item["name"], languages, f"{where}.name"),
                description=parse_texts(item["description"], languages, f"{where}.description"),
                price=_price(item["price"], f"{where}.price"),
                unit=parse_texts(item["unit"], languages, f"{where}.unit"),
            )
        )
    currency_name = (
        parse_texts(data["currency_name"], languages, "catalog.currency_name")
        if "currency_name" in data
        else dict.fromkeys(languages, currency)
    )
    quantity = data.get("quantity")
    page_size = data.get("page_size", DEFAULT_PAGE_SIZE)
    if type(page_size) is not int or not 1 <= page_size <= 20:
        raise Problem("catalog.page_size: must be a whole number from 1 to 20")
    return Catalog(
        items=tuple(items),
        currency=currency,
        currency_name=currency_name,
        field=require_string(data["field"], "catalog.field"),
        quantity_field=None if quantity is None else require_string(quantity, "catalog.quantity"),
        page_size=page_size,
    )


def _price(value: object, where: str) -> Decimal:
    # Money is exact: YAML floats go through their text, never through binary arithmetic.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Problem(f"{where}: must be a number such as 500 or 12.50")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise Problem(f"{where}: must be a number such as 500 or 12.50") from None
    if not price.is_finite() or price < 0 or price != price.quantize(Decimal("0.01")):
        raise Problem(f"{where}: must be zero or more, with at most two decimals")
    return price


def parse_step(
    name: str, body: object, languages: tuple[str, ...], catalog: Catalog | None
) -> Step:
    where = f"steps.{name}"
    data = require_mapping(body, where)
    if "end" in data:
        unknown_keys(data, _END_KEYS, where)
        end = data["end"]
        if end not in ("completed", "cancelled"):
            raise Problem(f"{where}.end: must be 'completed' or 'cancelled', got {end!r}")
        if "text" not in data:
            raise Problem(f"{where}: missing key 'text'")
        return Step(name=name, end=end, text=parse_texts(data["text"], languages, f"{where}.text"))

    unknown_keys(data, _STEP_KEYS, where)
    for key in ("prompt", "validator", "next"):
        if key not in data:
            raise Problem(f"{where}: missing key {key!r}")
    validator_name = require_string(data["validator"], f"{where}.validator")
    validator = VALIDATORS.get(validator_name)
    if validator is None:
        raise Problem(
            f"{where}.validator: unknown validator {validator_name!r} "
            f"(known: {', '.join(sorted(VALIDATORS))})"
        )
    params = dict(require_mapping(data.get("params", {}), f"{where}.params"))
    from_catalog = validator_name == "catalog_choice" and params.get("items") == "catalog"
    if from_catalog:
        if catalog is None:
            raise Problem(f"{where}.params.items: the flow has no catalog")
        params["items"] = [
            {"id": item.id, "names": [item.name[lang] for lang in languages]}
            for item in catalog.items
        ]
    try:
        validator.check_params(params)
    except ValueError as exc:
        raise Problem(f"{where}.params: {validator_name}: {exc}") from None

    errors_raw = require_mapping(data.get("errors", {}), f"{where}.errors")
    allowed_reasons = set(validator.reasons) | {"default"}
    for reason in errors_raw:
        if reason not in allowed_reasons:
            raise Problem(
                f"{where}.errors: {validator_name} has no reason {reason!r} "
                f"(reasons: {', '.join(sorted(validator.reasons))}, default)"
            )
    if "default" not in errors_raw:
        missing = sorted(validator.reasons - set(errors_raw))
        if missing:
            raise Problem(f"{where}.errors: missing text for reason {missing[0]!r}")
    errors = {r: parse_texts(t, languages, f"{where}.errors.{r}") for r, t in errors_raw.items()}

    next_raw = data["next"]
    next_step: str | dict[str, str]
    if isinstance(next_raw, Mapping):
        next_step = {
            str(k).lower() if isinstance(k, bool) else str(k): require_string(
                v, f"{where}.next.{k}"
            )
            for k, v in next_raw.items()
        }
        # YAML reads a bare yes/no key as a boolean; accept both spellings.
        next_step = {{"true": "yes", "false": "no"}.get(k, k): v for k, v in next_step.items()}
    else:
        next_step = require_string(next_raw, f"{where}.next")

    buttons = word_lists(data.get("buttons", {}), languages, f"{where}.buttons")
    if from_catalog and not buttons:
        assert catalog is not None
        buttons = {lang: tuple(item.name[lang] for item in catalog.items) for lang in languages}
    if validator_name == "model_files" and len(next(iter(buttons.values()), ())) != 2:
        raise Problem(f"{where}.buttons: model_files needs two labels: continue, remove the last")
    messages_raw = require_mapping(data.get("messages", {}), f"{where}.messages")
    wanted_messages = _STEP_MESSAGES.get(validator_name, frozenset())
    unknown_keys(messages_raw, set(wanted_messages), f"{where}.messages")
    for key in sorted(wanted_messages - set(messages_raw)):
        raise Problem(f"{where}.messages: missing text {key!r}")
    messages = {
        k: parse_texts(t, languages, f"{where}.messages.{k}") for k, t in messages_raw.items()
    }
    returns_to = data.get("returns_to")
    if returns_to is not None:
        returns_to = require_string(returns_to, f"{where}.returns_to")
    if buttons and languages[0] in buttons:
        # A partial language without its own labels shows the first language's.
        for lang in _partial(languages) - set(buttons):
            buttons[lang] = buttons[languages[0]]
    if buttons:
        if set(buttons) != set(languages):
            missing_lang = sorted(set(languages) - set(buttons))[0]
            raise Problem(f"{where}.buttons: missing labels for language {missing_lang!r}")
        if len({len(labels) for labels in buttons.values()}) != 1:
            raise Problem(f"{where}.buttons: every language needs the same number of labels")
    field_name = data.get("field")
    if field_name is not None and not (
        isinstance(field_name, str) and re.fullmatch(r"[A-Za-z_]\w*", field_name)
    ):
        raise Problem(f"{where}.field: must be an identifier, got {field_name!r}")
    if field_name == ORDER_ID:
        raise Problem(f"{where}.field: {ORDER_ID!r} is reserved for the order number")
    if validator_name == "model_files" and field_name is None:
        raise Problem(f"{where}: a model_files step needs a 'field' for its list of files")
    skip = word_lists(data.get("skip", {}), languages, f"{where}.skip")
    if skip and field_name is None:
        raise Problem(f"{where}.skip: a skippable step needs a 'field'")
    labels = word_lists(data.get("labels", {}), languages, f"{where}.labels")
    if labels and field_name is None:
        raise Problem(f"{where}.labels: only a step with a 'field' has a label")
    units = word_lists(data.get("units", {}), languages, f"{where}.units")
    if units and validator_name not in ("quantity", "integer"):
        raise Problem(f"{where}.units: only a quantity or integer step counts units")
    return Step(
        name=name,
        prompt=parse_texts(data["prompt"], languages, f"{where}.prompt"),
        validator=validator_name,
        params=params,
        field=field_name,
        errors=errors,
        next=next_step,
        buttons=buttons,
        skip=skip,
        help=parse_texts(data["help"], languages, f"{where}.help") if "help" in data else {},
        returns_to=returns_to,
        messages=messages,
        labels=labels,
        units=units,
    )


def check_branches(step: Step) -> None:
    """A branching ``next`` must name only values the validator can produce, and cover them
    all (or have a ``"*"`` entry), so no answer can leave the dialog without a next step."""
    assert step.validator is not None
    assert isinstance(step.next, Mapping)
    where = f"steps.{step.name}.next"
    outcomes_of = VALIDATORS[step.validator].outcomes
    keys = set(step.next) - {"*"}
    skips = {"null"} if step.skip else set()
    if outcomes_of is None:
        if "*" not in step.next:
            raise Problem(f"{where}: {step.validator} values are open-ended; add a '*' entry")
        return
    outcomes = set(outcomes_of(step.params)) | skips
    unknown = sorted(keys - outcomes)
    if unknown:
        raise Problem(
            f"{where}: {step.validator} never gives {unknown[0]!r} "
            f"(values: {', '.join(sorted(outcomes))})"
        )
    missing = sorted(outcomes - keys)
    if missing and "*" not in step.next:
        raise Problem(f"{where}: no step for value {missing[0]!r} (add it or a '*' entry)")


def placeholders_known(text: str, known: set[str], where: str) -> None:
    unknown = sorted(placeholders(text) - known)
    if unknown:
        hint = " (only an end step with end: completed may use it)" if ORDER_ID in unknown else ""
        raise Problem(f"{where}: unknown placeholder {{{unknown[0]}}}{hint}")


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def check_placeholders(
    step: Step, texts: Mapping[str, Texts], fields: set[str], variables: set[str]
) -> None:
    where = f"steps.{step.name}"
    if step.end == "completed":
        # The worker fills {order_id} with a plain replace after the engine ran, so nothing
        # else may be substituted here: customer data could then smuggle in "{order_id}".
        for language, text in step.text.items():
            found = placeholders(text)
            if ORDER_ID not in found:
                raise Problem(f"{where}.text.{language}: must contain {{{ORDER_ID}}}")
            if found - {ORDER_ID}:
                extra = sorted(found - {ORDER_ID})[0]
                raise Problem(
                    f"{where}.text.{language}: only {{{ORDER_ID}}} is allowed here, not {{{extra}}}"
                )
        return
    # A step's own params ({max} of a quantity) may be quoted in its texts.
    known = fields | variables | {k for k, v in step.params.items() if _is_scalar(v)}
    known |= _STEP_VALUES.get(step.validator or "", frozenset())
    groups: list[tuple[str, Texts]] = [
        ("prompt", step.prompt),
        ("help", step.help),
        ("text", step.text),
    ]
    groups += [(f"errors.{reason}", t) for reason, t in step.errors.items()]
    groups += [(f"messages.{key}", t) for key, t in step.messages.items()]
    for key, by_language in groups:
        for language, text in by_language.items():
            placeholders_known(text, known, f"{where}.{key}.{language}")


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


def parse_faq(value: object, languages: tuple[str, ...]) -> tuple[FaqEntry, ...]:
    """``faq``: a list of ``{keywords: {language: [word, ...]}, answer: {language: text}}``."""
    if not isinstance(value, list):
        raise Problem("faq: must be a list of {keywords, answer}")
    entries: list[FaqEntry] = []
    for index, raw in enumerate(value):
        where = f"faq[{index}]"
        entry = require_mapping(raw, where)
        unknown_keys(entry, {"keywords", "answer"}, where)
        for key in ("keywords", "answer"):
            if key not in entry:
                raise Problem(f"{where}: missing key {key!r}")
        keywords = word_lists(entry["keywords"], languages, f"{where}.keywords")
        if not keywords:
            raise Problem(f"{where}.keywords: needs words in at least one language")
        entries.append(
            FaqEntry(keywords, parse_texts(entry["answer"], languages, f"{where}.answer"))
        )
    return tuple(entries)


def parse_business_hours(value: object) -> BusinessHours:
    """``business_hours``: ``timezone`` (IANA), ``week`` ({mon: "09:00-20:00", ..., sun:
    closed}; a day left out is closed) and optional ``holidays`` (ISO dates)."""
    data = require_mapping(value, "business_hours")
    unknown_keys(data, {"timezone", "week", "holidays"}, "business_hours")
    for key in ("timezone", "week"):
        if key not in data:
            raise Problem(f"business_hours: missing key {key!r}")
    timezone = require_string(data["timezone"], "business_hours.timezone")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise Problem(
            f"business_hours.timezone: unknown time zone {timezone!r} (e.g. Asia/Bishkek)"
        ) from None
    week_raw = require_mapping(data["week"], "business_hours.week")
    unknown_keys(week_raw, set(_WEEKDAYS), "business_hours.week")
    week: list[tuple[int, int] | None] = []
    for day in _WEEKDAYS:
        hours = week_raw.get(day, "closed")
        where = f"business_hours.week.{day}"
        if hours is False or hours == "closed":  # YAML reads a bare "off" as False
            week.append(None)
            continue
        match = _HOURS.fullmatch(str(hours).strip())
        if match is None:
            raise Problem(f'{where}: must be like "09:00-20:00" or closed, got {hours!r}')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        opens, closes = h1 * 60 + m1, h2 * 60 + m2
        if not (h1 < 24 and h2 <= 24 and m1 < 60 and m2 < 60 and opens < closes <= 24 * 60):
            raise Problem(f"{where}: {hours!r} must open before it closes, within one day")
        week.append((opens, closes))
    holidays_raw = data.get("holidays", [])
    if not isinstance(holidays_raw, list):
        raise Problem("business_hours.holidays: must be a list of dates like 2027-01-01")
    holidays: set[str] = set()
    for day in holidays_raw:
        try:
            holidays.add(datetime.date.fromisoformat(str(day)).isoformat())
        except ValueError:
            raise Problem(
                f"business_hours.holidays: {day!r} is not a date like 2027-01-01"
            ) from None
    return BusinessHours(timezone, tuple(week), frozenset(holidays))
