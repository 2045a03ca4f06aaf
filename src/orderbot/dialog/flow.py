"""Flows as data: load a YAML flow file into a checked, immutable :class:`Flow`.

Everything that can be wrong with a flow is found here, at load time, and reported as one
``FlowError`` line naming the file, the step and the key, so a typo never reaches a customer.

Schema (see ``flows/water.yaml`` for a full example)::

    name: water
    languages: [ru, en]            # the first is the fallback
    start: WAITING_ADDRESS         # the first question, asked right after the greeting
    vars: {manager_phone: "..."}   # optional constants usable as {placeholders} in any text
    texts:                         # global texts, each {language: text}
      greeting, help, cancelled, empty, unknown_command
      # optional (code defaults otherwise), for order tracking and operator handoff:
      # track_header, track_line ({order_id} {date} {status} {total}), track_empty,
      # track_not_found ({number}), track_order ({order_id} {date} {status} {total} {history}),
      # handoff_started, handoff_unavailable, handoff_resumed
      # and for /services and /order (see orderbot/dialog/browse.py for the defaults):
      # services (a flow without catalog: what the shop offers), catalog_header,
      # catalog_item ({name} {description} {price} {unit}), catalog_order_button ({name},
      # required in it: the button must tell the items apart), catalog_page ({page} {pages}),
      # catalog_prev, catalog_next, catalog_pick_numbers, catalog_pick_names, catalog_more,
      # catalog_chosen ({name} {price}), order_in_progress
    status_texts: {confirmed: {ru: ..., en: ...}, ...}   # optional: what the customer is told
                                   # when an order gets that status ({order_id} {status} {note})
    status_names: {in_progress: {ru: ..., en: ...}, ...} # optional: how a status is shown
    cancel_words: {ru: [...], en: [...]}   # optional; a whole message equal to one cancels
    restart_words: {ru: [...], en: [...]}  # optional; likewise restarts
    navigation:                    # optional: Back and Cancel buttons on every question step
      back: {ru: "« Назад", en: "« Back"}       # (no Back on the start step)
      cancel: {ru: "Отмена", en: "Cancel"}
      back_words: {ru: [назад], en: [back]}    # optional; typed words that mean Back
    catalog:                       # optional: what the customer orders, with prices
      file: printing_catalog.yaml  # relative to the flow file (or `items` + `currency` inline)
      field: service               # the field holding the chosen item's id
      quantity: files              # optional field counting units: a number or a list (its
                                   # length); without it one unit. Orders then get line items
                                   # and a total; texts may use {catalog}, {order_lines}, {total}
      page_size: 5                 # optional: items a /services page shows (default 5)
    steps:
      NAME:                        # a question step
        prompt: {ru: ..., en: ...}
        validator: address         # a name in validators.VALIDATORS
        params: {...}              # optional, checked by the validator
        field: address             # optional; where the value goes in the dialog data
        errors: {reason: {ru: ..., en: ...}}   # a text for every reason (or a `default`)
        next: NEXT_STEP            # or {value: STEP, ..., "*": STEP} to branch on the value
                                   # (yes_no: yes/no; catalog_choice: item ids; skipped: null)
        buttons: {ru: [...], en: [...]}        # optional choice labels; a bare "2" picks the
                                               # second (yes_no: [yes, no]; catalog_choice:
                                               # one per item, in order)
        skip: {ru: [...], en: [...]}           # optional words that leave the field empty
        help: {ru: ..., en: ...}               # optional, shown before the prompt on /help
        returns_to: SUMMARY        # optional, on an edit menu: the step picked from it is
                                   # changed in place and the dialog comes back to SUMMARY
        messages: {name: {ru: ..., en: ...}}   # texts the validator's step needs besides errors
                                   # (model_files: received, removed)
      NAME:                        # an end step
        end: completed | cancelled # completed stores the order
        text: {ru: ..., en: ...}   # completed: must hold {order_id}, and no other placeholder

Texts substitute ``{field}`` (collected values; a choice shows its button label, a missing
field "—"), ``{var}`` (from ``vars``) and, in a step's own texts, ``{param}`` (its scalar params,
e.g. ``{max}``) at render time, never via ``str.format``.

A catalog step names the catalog as its items: ``validator: catalog_choice`` with
``params: {items: catalog}``; its buttons default to the item names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as _default
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import yaml

from orderbot.dialog.validators import VALIDATORS
from orderbot.errors import FlowError

__all__ = [
    "FLOWS_DIR",
    "OPTIONAL_TEXTS",
    "ORDER_STATUSES",
    "Catalog",
    "CatalogEntry",
    "Flow",
    "Step",
    "load_flow",
    "placeholders",
]

FLOWS_DIR = Path(__file__).parent / "flows"
"""Where the shipped flows live; ``load_flow("water")`` reads ``FLOWS_DIR / "water.yaml"``."""

ORDER_ID = "order_id"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GLOBAL_TEXTS = ("greeting", "help", "cancelled", "empty", "unknown_command")
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
ORDER_STATUSES = ("new", "confirmed", "in_progress", "ready", "delivered", "cancelled")
"""Every status an order can have (the transitions are in :mod:`orderbot.tracking`)."""
_STATUS_TEXT_VALUES = frozenset({"order_id", "status", "note"})
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
}
# Texts a validator's step needs besides its errors, by validator.
_STEP_MESSAGES = {"model_files": frozenset({"received", "removed"})}
# Placeholders the engine fills on a validator's step, besides fields, vars and params.
_STEP_VALUES = {"model_files": frozenset({"file_name", "file_count", "limit_mb"})}
_CATALOG_VALUES = frozenset({"catalog", "order_lines", "total", "currency"})
_CATALOG_KEYS = {"file", "items", "currency", "currency_name", "field", "quantity", "page_size"}
_DEFAULT_PAGE_SIZE = 5
_NAV_KEYS = {"back", "cancel", "back_words"}
_END_KEYS = {"end", "text"}
_TOP_KEYS = {
    "name",
    "languages",
    "start",
    "vars",
    "texts",
    "cancel_words",
    "restart_words",
    "navigation",
    "catalog",
    "steps",
    "status_texts",
    "status_names",
}

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
    page_size: int = _DEFAULT_PAGE_SIZE
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


def load_flow(source: str | Path) -> Flow:
    """Load a flow: a shipped flow's name (``"water"``) or the path of a YAML file.

    Raises ``FlowError`` with one line naming what is wrong and where.
    """
    if isinstance(source, str) and re.fullmatch(r"[A-Za-z0-9_-]+", source):
        path = FLOWS_DIR / f"{source}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in FLOWS_DIR.glob("*.yaml"))
            raise FlowError(f"unknown flow {source!r} (shipped flows: {', '.join(shipped)})")
    else:
        path = Path(source)
    try:
        raw_text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError(f"cannot read flow file {path}: {exc}") from exc
    try:
        raw = yaml.safe_load(raw_text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise FlowError(f"{path}: YAML syntax error{where}: {problem}") from exc
    try:
        return _build(raw, path.parent)
    except _Problem as exc:
        raise FlowError(f"{path}: {exc}") from None


class _Problem(Exception):
    """A flow inconsistency, before the file name is put in front of it."""


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Problem(f"{where}: must be a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise _Problem(f"{where}: keys must be strings, got {key!r}")
    return value


def _string(value: object, where: str) -> str:
    if isinstance(value, bool):
        # YAML 1.1 reads unquoted yes/no/on/off as booleans: a classic trap in button labels.
        raise _Problem(f"{where}: must be a string, got {value!r} (quote yes/no/on/off in YAML)")
    if not isinstance(value, str) or not value.strip():
        raise _Problem(f"{where}: must be a non-empty string")
    return value


def _unknown_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _Problem(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def _texts(value: object, languages: tuple[str, ...], where: str) -> dict[str, str]:
    data = _mapping(value, where)
    for language in languages:
        if language not in data:
            raise _Problem(f"{where}: missing text for language {language!r}")
    extra = sorted(set(data) - set(languages))
    if extra:
        raise _Problem(f"{where}: language {extra[0]!r} is not in the flow's languages")
    return {language: _string(data[language], f"{where}.{language}") for language in languages}


def _word_lists(
    value: object, languages: tuple[str, ...], where: str
) -> dict[str, tuple[str, ...]]:
    data = _mapping(value, where)
    result: dict[str, tuple[str, ...]] = {}
    for language, words in data.items():
        if language not in languages:
            raise _Problem(f"{where}: language {language!r} is not in the flow's languages")
        if not isinstance(words, list) or not words:
            raise _Problem(f"{where}.{language}: must be a non-empty list of strings")
        result[language] = tuple(_string(w, f"{where}.{language}") for w in words)
    return result


def _build(raw: object, base_dir: Path) -> Flow:
    top = _mapping(raw, "top level")
    _unknown_keys(top, _TOP_KEYS, "top level")
    for key in ("name", "languages", "start", "texts", "steps"):
        if key not in top:
            raise _Problem(f"missing top-level key {key!r}")
    name = _string(top["name"], "name")
    if not isinstance(top["languages"], list) or not top["languages"]:
        raise _Problem("languages: must be a non-empty list such as [ru, en]")
    languages = tuple(_string(lang, "languages") for lang in top["languages"])
    if len(set(languages)) != len(languages):
        raise _Problem("languages: listed twice")

    variables = {k: str(v) for k, v in _mapping(top.get("vars", {}), "vars").items()}
    texts_raw = _mapping(top["texts"], "texts")
    _unknown_keys(texts_raw, set(_GLOBAL_TEXTS) | set(OPTIONAL_TEXTS), "texts")
    texts: dict[str, dict[str, str]] = {}
    for key in _GLOBAL_TEXTS:
        if key not in texts_raw:
            raise _Problem(f"texts: missing text {key!r}")
        texts[key] = _texts(texts_raw[key], languages, f"texts.{key}")
    for key in OPTIONAL_TEXTS:
        if key in texts_raw:
            texts[key] = _texts(texts_raw[key], languages, f"texts.{key}")
    status_texts = _status_texts(top.get("status_texts", {}), languages, "status_texts")
    status_names = _status_texts(top.get("status_names", {}), languages, "status_names")
    for key, by_status in (("status_texts", status_texts), ("status_names", status_names)):
        allowed = _STATUS_TEXT_VALUES if key == "status_texts" else frozenset()
        for status, by_language in by_status.items():
            for language, text in by_language.items():
                _placeholders_known(text, set(variables) | allowed, f"{key}.{status}.{language}")

    catalog = (
        _catalog(top["catalog"], languages, base_dir) if top.get("catalog") is not None else None
    )
    steps_raw = _mapping(top["steps"], "steps")
    if not steps_raw:
        raise _Problem("steps: a flow needs at least one step")
    steps = {
        step_name: _step(step_name, body, languages, catalog)
        for step_name, body in steps_raw.items()
    }

    start = _string(top["start"], "start")
    if start not in steps:
        raise _Problem(f"start: step {start!r} does not exist")
    if steps[start].end is not None:
        raise _Problem(f"start: step {start!r} is an end step; the flow must ask something")

    fields: set[str] = {s.field for s in steps.values() if s.field}
    if catalog is not None:
        reserved = sorted(fields & {"items", "total", "currency"})
        if reserved:
            raise _Problem(f"field {reserved[0]!r} is reserved for the order of a catalog flow")
        counted: tuple[tuple[str, str | None], ...] = (
            ("field", catalog.field),
            ("quantity", catalog.quantity_field),
        )
        for key, field_name in counted:
            if field_name is not None and field_name not in fields:
                raise _Problem(f"catalog.{key}: no step collects field {field_name!r}")
    extra = set(_CATALOG_VALUES) if catalog is not None else set()
    for s in steps.values():
        if s.returns_to is not None:
            summary = steps.get(s.returns_to)
            if summary is None or summary.end is not None:
                raise _Problem(
                    f"steps.{s.name}.returns_to: {s.returns_to!r} is not a question step"
                )
            if not isinstance(s.next, Mapping):
                raise _Problem(f"steps.{s.name}.returns_to: an edit menu needs a branching next")
        targets = [s.next] if isinstance(s.next, str) else list((s.next or {}).values())
        for target in targets:
            if target not in steps:
                raise _Problem(f"steps.{s.name}.next: step {target!r} does not exist")
        if isinstance(s.next, Mapping):
            _check_branches(s)
        _check_placeholders(s, texts, fields | extra, set(variables))
    for key, by_language in texts.items():
        known = set(variables) | OPTIONAL_TEXTS.get(key, frozenset())
        for language, text in by_language.items():
            _placeholders_known(text, known, f"texts.{key}.{language}")
    for language, text in texts.get("catalog_order_button", {}).items():
        # A pressed button comes back as its label: without the name, every card's button
        # would read the same and the item could not be told.
        if "name" not in placeholders(text):
            raise _Problem(f"texts.catalog_order_button.{language}: must contain {{name}}")
    navigation = _mapping(top.get("navigation", {}), "navigation")
    _unknown_keys(navigation, _NAV_KEYS, "navigation")
    back_label: dict[str, str] = {}
    cancel_label: dict[str, str] = {}
    if navigation:
        for key in ("back", "cancel"):
            if key not in navigation:
                raise _Problem(f"navigation: missing key {key!r}")
        back_label = _texts(navigation["back"], languages, "navigation.back")
        cancel_label = _texts(navigation["cancel"], languages, "navigation.cancel")
    back_words = _word_lists(navigation.get("back_words", {}), languages, "navigation.back_words")

    cancel = _word_lists(top.get("cancel_words", {}), languages, "cancel_words")
    restart = _word_lists(top.get("restart_words", {}), languages, "restart_words")
    return Flow(
        name=name,
        languages=languages,
        start=start,
        steps=steps,
        texts=texts,
        vars=variables,
        cancel_words=tuple(w for words in cancel.values() for w in words),
        restart_words=tuple(w for words in restart.values() for w in words),
        back_label=back_label,
        cancel_label=cancel_label,
        back_words=tuple(w for words in back_words.values() for w in words),
        catalog=catalog,
        status_texts=status_texts,
        status_names=status_names,
    )


def _status_texts(
    value: object, languages: tuple[str, ...], where: str
) -> dict[str, dict[str, str]]:
    data = _mapping(value, where)
    _unknown_keys(data, set(ORDER_STATUSES), where)
    return {status: _texts(t, languages, f"{where}.{status}") for status, t in data.items()}


def _catalog(value: object, languages: tuple[str, ...], base_dir: Path) -> Catalog:
    data = dict(_mapping(value, "catalog"))
    _unknown_keys(data, _CATALOG_KEYS, "catalog")
    if "file" in data:
        file = base_dir / _string(data.pop("file"), "catalog.file")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise _Problem(f"catalog.file: cannot read {file}: {exc}") from None
        loaded = _mapping(loaded, f"catalog file {file.name}")
        _unknown_keys(loaded, {"items", "currency", "currency_name"}, f"catalog file {file.name}")
        data = {**loaded, **data}
    for key in ("items", "currency", "field"):
        if key not in data:
            raise _Problem(f"catalog: missing key {key!r}")
    currency = _string(data["currency"], "catalog.currency")
    if not isinstance(data["items"], list) or not data["items"]:
        raise _Problem("catalog.items: must be a non-empty list")
    items: list[CatalogEntry] = []
    for index, raw_item in enumerate(data["items"]):
        where = f"catalog.items[{index}]"
        item = _mapping(raw_item, where)
        _unknown_keys(item, {"id", "name", "description", "price", "unit"}, where)
        for key in ("id", "name", "description", "price", "unit"):
            if key not in item:
                raise _Problem(f"{where}: missing key {key!r}")
        item_id = _string(item["id"], f"{where}.id")
        if any(existing.id == item_id for existing in items):
            raise _Problem(f"{where}.id: {item_id!r} is listed twice")
        items.append(
            CatalogEntry(
                id=item_id,
                name=_texts(item["name"], languages, f"{where}.name"),
                description=_texts(item["description"], languages, f"{where}.description"),
                price=_price(item["price"], f"{where}.price"),
                unit=_texts(item["unit"], languages, f"{where}.unit"),
            )
        )
    currency_name = (
        _texts(data["currency_name"], languages, "catalog.currency_name")
        if "currency_name" in data
        else dict.fromkeys(languages, currency)
    )
    quantity = data.get("quantity")
    page_size = data.get("page_size", _DEFAULT_PAGE_SIZE)
    if type(page_size) is not int or not 1 <= page_size <= 20:
        raise _Problem("catalog.page_size: must be a whole number from 1 to 20")
    return Catalog(
        items=tuple(items),
        currency=currency,
        currency_name=currency_name,
        field=_string(data["field"], "catalog.field"),
        quantity_field=None if quantity is None else _string(quantity, "catalog.quantity"),
        page_size=page_size,
    )


def _price(value: object, where: str) -> Decimal:
    # Money is exact: YAML floats go through their text, never through binary arithmetic.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Problem(f"{where}: must be a number such as 500 or 12.50")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise _Problem(f"{where}: must be a number such as 500 or 12.50") from None
    if not price.is_finite() or price < 0 or price != price.quantize(Decimal("0.01")):
        raise _Problem(f"{where}: must be zero or more, with at most two decimals")
    return price


def _step(name: str, body: object, languages: tuple[str, ...], catalog: Catalog | None) -> Step:
    where = f"steps.{name}"
    data = _mapping(body, where)
    if "end" in data:
        _unknown_keys(data, _END_KEYS, where)
        end = data["end"]
        if end not in ("completed", "cancelled"):
            raise _Problem(f"{where}.end: must be 'completed' or 'cancelled', got {end!r}")
        if "text" not in data:
            raise _Problem(f"{where}: missing key 'text'")
        return Step(name=name, end=end, text=_texts(data["text"], languages, f"{where}.text"))

    _unknown_keys(data, _STEP_KEYS, where)
    for key in ("prompt", "validator", "next"):
        if key not in data:
            raise _Problem(f"{where}: missing key {key!r}")
    validator_name = _string(data["validator"], f"{where}.validator")
    validator = VALIDATORS.get(validator_name)
    if validator is None:
        raise _Problem(
            f"{where}.validator: unknown validator {validator_name!r} "
            f"(known: {', '.join(sorted(VALIDATORS))})"
        )
    params = dict(_mapping(data.get("params", {}), f"{where}.params"))
    from_catalog = validator_name == "catalog_choice" and params.get("items") == "catalog"
    if from_catalog:
        if catalog is None:
            raise _Problem(f"{where}.params.items: the flow has no catalog")
        params["items"] = [
            {"id": item.id, "names": [item.name[lang] for lang in languages]}
            for item in catalog.items
        ]
    try:
        validator.check_params(params)
    except ValueError as exc:
        raise _Problem(f"{where}.params: {validator_name}: {exc}") from None

    errors_raw = _mapping(data.get("errors", {}), f"{where}.errors")
    allowed_reasons = set(validator.reasons) | {"default"}
    for reason in errors_raw:
        if reason not in allowed_reasons:
            raise _Problem(
                f"{where}.errors: {validator_name} has no reason {reason!r} "
                f"(reasons: {', '.join(sorted(validator.reasons))}, default)"
            )
    if "default" not in errors_raw:
        missing = sorted(validator.reasons - set(errors_raw))
        if missing:
            raise _Problem(f"{where}.errors: missing text for reason {missing[0]!r}")
    errors = {r: _texts(t, languages, f"{where}.errors.{r}") for r, t in errors_raw.items()}

    next_raw = data["next"]
    next_step: str | dict[str, str]
    if isinstance(next_raw, Mapping):
        next_step = {
            str(k).lower() if isinstance(k, bool) else str(k): _string(v, f"{where}.next.{k}")
            for k, v in next_raw.items()
        }
        # YAML reads a bare yes/no key as a boolean; accept both spellings.
        next_step = {{"true": "yes", "false": "no"}.get(k, k): v for k, v in next_step.items()}
    else:
        next_step = _string(next_raw, f"{where}.next")

    buttons = _word_lists(data.get("buttons", {}), languages, f"{where}.buttons")
    if from_catalog and not buttons:
        assert catalog is not None
        buttons = {lang: tuple(item.name[lang] for item in catalog.items) for lang in languages}
    if validator_name == "model_files" and len(next(iter(buttons.values()), ())) != 2:
        raise _Problem(f"{where}.buttons: model_files needs two labels: continue, remove the last")
    messages_raw = _mapping(data.get("messages", {}), f"{where}.messages")
    wanted_messages = _STEP_MESSAGES.get(validator_name, frozenset())
    _unknown_keys(messages_raw, set(wanted_messages), f"{where}.messages")
    for key in sorted(wanted_messages - set(messages_raw)):
        raise _Problem(f"{where}.messages: missing text {key!r}")
    messages = {k: _texts(t, languages, f"{where}.messages.{k}") for k, t in messages_raw.items()}
    returns_to = data.get("returns_to")
    if returns_to is not None:
        returns_to = _string(returns_to, f"{where}.returns_to")
    if buttons:
        if set(buttons) != set(languages):
            missing_lang = sorted(set(languages) - set(buttons))[0]
            raise _Problem(f"{where}.buttons: missing labels for language {missing_lang!r}")
        if len({len(labels) for labels in buttons.values()}) != 1:
            raise _Problem(f"{where}.buttons: every language needs the same number of labels")
    field_name = data.get("field")
    if field_name is not None and not (
        isinstance(field_name, str) and re.fullmatch(r"[A-Za-z_]\w*", field_name)
    ):
        raise _Problem(f"{where}.field: must be an identifier, got {field_name!r}")
    if field_name == ORDER_ID:
        raise _Problem(f"{where}.field: {ORDER_ID!r} is reserved for the order number")
    if validator_name == "model_files" and field_name is None:
        raise _Problem(f"{where}: a model_files step needs a 'field' for its list of files")
    skip = _word_lists(data.get("skip", {}), languages, f"{where}.skip")
    if skip and field_name is None:
        raise _Problem(f"{where}.skip: a skippable step needs a 'field'")
    return Step(
        name=name,
        prompt=_texts(data["prompt"], languages, f"{where}.prompt"),
        validator=validator_name,
        params=params,
        field=field_name,
        errors=errors,
        next=next_step,
        buttons=buttons,
        skip=skip,
        help=_texts(data["help"], languages, f"{where}.help") if "help" in data else {},
        returns_to=returns_to,
        messages=messages,
    )


def _check_branches(step: Step) -> None:
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
            raise _Problem(f"{where}: {step.validator} values are open-ended; add a '*' entry")
        return
    outcomes = set(outcomes_of(step.params)) | skips
    unknown = sorted(keys - outcomes)
    if unknown:
        raise _Problem(
            f"{where}: {step.validator} never gives {unknown[0]!r} "
            f"(values: {', '.join(sorted(outcomes))})"
        )
    missing = sorted(outcomes - keys)
    if missing and "*" not in step.next:
        raise _Problem(f"{where}: no step for value {missing[0]!r} (add it or a '*' entry)")


def _placeholders_known(text: str, known: set[str], where: str) -> None:
    unknown = sorted(placeholders(text) - known)
    if unknown:
        hint = " (only an end step with end: completed may use it)" if ORDER_ID in unknown else ""
        raise _Problem(f"{where}: unknown placeholder {{{unknown[0]}}}{hint}")


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _check_placeholders(
    step: Step, texts: Mapping[str, Texts], fields: set[str], variables: set[str]
) -> None:
    where = f"steps.{step.name}"
    if step.end == "completed":
        # The worker fills {order_id} with a plain replace after the engine ran, so nothing
        # else may be substituted here: customer data could then smuggle in "{order_id}".
        for language, text in step.text.items():
            found = placeholders(text)
            if ORDER_ID not in found:
                raise _Problem(f"{where}.text.{language}: must contain {{{ORDER_ID}}}")
            if found - {ORDER_ID}:
                extra = sorted(found - {ORDER_ID})[0]
                raise _Problem(
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
            _placeholders_known(text, known, f"{where}.{key}.{language}")
