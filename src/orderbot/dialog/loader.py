"""Flows as data: load a YAML flow file into a checked, immutable :class:`Flow`.

Everything that can be wrong with a flow is found here, at load time, and reported as one
``FlowError`` line naming the file, the step and the key, so a typo never reaches a customer.
This module reads the file and checks the flow as a whole; the checks of each part (texts,
catalog, steps, branches, placeholders) are in :mod:`orderbot.dialog.flow_parts`, and the loaded
objects (:class:`Flow`, :class:`Step`, :class:`Catalog`) in :mod:`orderbot.dialog.flow`.

Schema (see ``flows/water.yaml`` for a full example)::

    name: water
    languages: [ru, en]            # the first is the fallback
    partial_languages: [ky]        # optional: also spoken, but a text may be missing in them
                                   # (the first language's is shown), so adding one is gradual
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
      # and for customers who write like people (see orderbot/dialog/notes.py): details_noted,
      # details_changed ({details}), change_field ({field}), edit_hint ({fields}),
      # question_unknown, stale_button, media_caption, language_switched, closed_note ({when}),
      # and repeat_offer (any {field}: offered to a returning customer with the last order)
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
    faq:                           # optional: questions the bot answers itself
      - keywords: {ru: [цен, стоит], en: [price, cost]}   # word beginnings, by language
        answer: {ru: ..., en: ...}
    business_hours:                # optional: outside them the confirmation says when
      timezone: Asia/Bishkek       # delivery can happen (orders are still taken)
      week: {mon: "09:00-20:00", ..., sun: closed}        # a day left out is closed
      holidays: ["2027-01-01"]
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
        labels: {ru: [адрес], en: [address]}   # optional words naming the field in a message
                                   # ("Адрес: ...", "change the address to ..."); the first is
                                   # how replies name it
        units: {ru: [бутыли, ...], en: [bottles]}  # optional, quantity/integer steps: a number
                                   # next to one of these anywhere in a message answers the step
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
from pathlib import Path

import yaml

from orderbot.dialog.flow import (
    OPTIONAL_TEXTS,
    Flow,
    placeholders,
)
from orderbot.dialog.flow_parts import (
    Languages,
    Problem,
    check_branches,
    check_placeholders,
    parse_business_hours,
    parse_catalog,
    parse_faq,
    parse_status_texts,
    parse_step,
    parse_texts,
    placeholders_known,
    require_mapping,
    require_string,
    unknown_keys,
    word_lists,
)
from orderbot.errors import FlowError

__all__ = ["FLOWS_DIR", "load_flow"]

FLOWS_DIR = Path(__file__).parent / "flows"
"""Where the shipped flows live; ``load_flow("water")`` reads ``FLOWS_DIR / "water.yaml"``."""

_GLOBAL_TEXTS = ("greeting", "help", "cancelled", "empty", "unknown_command")
_STATUS_TEXT_VALUES = frozenset({"order_id", "status", "note"})
_CATALOG_VALUES = frozenset({"catalog", "order_lines", "total", "currency"})
_NAV_KEYS = {"back", "cancel", "back_words"}
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
    "partial_languages",
    "faq",
    "business_hours",
}


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
    except Problem as exc:
        raise FlowError(f"{path}: {exc}") from None


def _build(raw: object, base_dir: Path) -> Flow:
    top = require_mapping(raw, "top level")
    unknown_keys(top, _TOP_KEYS, "top level")
    for key in ("name", "languages", "start", "texts", "steps"):
        if key not in top:
            raise Problem(f"missing top-level key {key!r}")
    name = require_string(top["name"], "name")
    if not isinstance(top["languages"], list) or not top["languages"]:
        raise Problem("languages: must be a non-empty list such as [ru, en]")
    declared = tuple(require_string(lang, "languages") for lang in top["languages"])
    partial_raw = top.get("partial_languages", [])
    if not isinstance(partial_raw, list):
        raise Problem("partial_languages: must be a list such as [ky]")
    partial = tuple(require_string(lang, "partial_languages") for lang in partial_raw)
    languages = Languages(declared, partial)
    if len(set(languages)) != len(languages):
        raise Problem("languages: listed twice (in languages or partial_languages)")

    variables = {k: str(v) for k, v in require_mapping(top.get("vars", {}), "vars").items()}
    texts_raw = require_mapping(top["texts"], "texts")
    unknown_keys(texts_raw, set(_GLOBAL_TEXTS) | set(OPTIONAL_TEXTS), "texts")
    texts: dict[str, dict[str, str]] = {}
    for key in _GLOBAL_TEXTS:
        if key not in texts_raw:
            raise Problem(f"texts: missing text {key!r}")
        texts[key] = parse_texts(texts_raw[key], languages, f"texts.{key}")
    for key in OPTIONAL_TEXTS:
        if key in texts_raw:
            texts[key] = parse_texts(texts_raw[key], languages, f"texts.{key}")
    status_texts = parse_status_texts(top.get("status_texts", {}), languages, "status_texts")
    status_names = parse_status_texts(top.get("status_names", {}), languages, "status_names")
    for key, by_status in (("status_texts", status_texts), ("status_names", status_names)):
        allowed = _STATUS_TEXT_VALUES if key == "status_texts" else frozenset()
        for status, by_language in by_status.items():
            for language, text in by_language.items():
                placeholders_known(text, set(variables) | allowed, f"{key}.{status}.{language}")

    catalog = (
        parse_catalog(top["catalog"], languages, base_dir)
        if top.get("catalog") is not None
        else None
    )
    steps_raw = require_mapping(top["steps"], "steps")
    if not steps_raw:
        raise Problem("steps: a flow needs at least one step")
    steps = {
        step_name: parse_step(step_name, body, languages, catalog)
        for step_name, body in steps_raw.items()
    }

    start = require_string(top["start"], "start")
    if start not in steps:
        raise Problem(f"start: step {start!r} does not exist")
    if steps[start].end is not None:
        raise Problem(f"start: step {start!r} is an end step; the flow must ask something")

    fields: set[str] = {s.field for s in steps.values() if s.field}
    if catalog is not None:
        reserved = sorted(fields & {"items", "total", "currency"})
        if reserved:
            raise Problem(f"field {reserved[0]!r} is reserved for the order of a catalog flow")
        counted: tuple[tuple[str, str | None], ...] = (
            ("field", catalog.field),
            ("quantity", catalog.quantity_field),
        )
        for key, field_name in counted:
            if field_name is not None and field_name not in fields:
                raise Problem(f"catalog.{key}: no step collects field {field_name!r}")
    named: dict[str, str] = {}
    for s in steps.values():
        for words in s.labels.values():
            for word in words:
                key = word.lower().replace("ё", "е")
                if named.setdefault(key, s.field or "") != s.field:
                    # "Номер: ..." must say which detail it is, or it is not read at all.
                    raise Problem(
                        f"steps.{s.name}.labels: {word!r} already names field {named[key]!r}"
                    )
    extra = set(_CATALOG_VALUES) if catalog is not None else set()
    for s in steps.values():
        if s.returns_to is not None:
            summary = steps.get(s.returns_to)
            if summary is None or summary.end is not None:
                raise Problem(f"steps.{s.name}.returns_to: {s.returns_to!r} is not a question step")
            if not isinstance(s.next, Mapping):
                raise Problem(f"steps.{s.name}.returns_to: an edit menu needs a branching next")
        targets = [s.next] if isinstance(s.next, str) else list((s.next or {}).values())
        for target in targets:
            if target not in steps:
                raise Problem(f"steps.{s.name}.next: step {target!r} does not exist")
        if isinstance(s.next, Mapping):
            check_branches(s)
        check_placeholders(s, texts, fields | extra, set(variables))
    for key, by_language in texts.items():
        known = set(variables) | OPTIONAL_TEXTS.get(key, frozenset())
        if key == "repeat_offer":
            known |= fields
        for language, text in by_language.items():
            placeholders_known(text, known, f"texts.{key}.{language}")
    for language, text in texts.get("catalog_order_button", {}).items():
        # A pressed button comes back as its label: without the name, every card's button
        # would read the same and the item could not be told.
        if "name" not in placeholders(text):
            raise Problem(f"texts.catalog_order_button.{language}: must contain {{name}}")
    navigation = require_mapping(top.get("navigation", {}), "navigation")
    unknown_keys(navigation, _NAV_KEYS, "navigation")
    back_label: dict[str, str] = {}
    cancel_label: dict[str, str] = {}
    if navigation:
        for key in ("back", "cancel"):
            if key not in navigation:
                raise Problem(f"navigation: missing key {key!r}")
        back_label = parse_texts(navigation["back"], languages, "navigation.back")
        cancel_label = parse_texts(navigation["cancel"], languages, "navigation.cancel")
    back_words = word_lists(navigation.get("back_words", {}), languages, "navigation.back_words")

    cancel = word_lists(top.get("cancel_words", {}), languages, "cancel_words")
    restart = word_lists(top.get("restart_words", {}), languages, "restart_words")
    return Flow(
        name=name,
        languages=declared,
        partial_languages=partial,
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
        faq=parse_faq(top.get("faq", []), languages),
        hours=(
            parse_business_hours(top["business_hours"])
            if top.get("business_hours") is not None
            else None
        ),
    )
