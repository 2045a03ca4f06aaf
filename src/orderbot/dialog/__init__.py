"""The dialog: a pure engine driven by flows that are data (YAML), with named validators."""

from __future__ import annotations

from orderbot.dialog.engine import (
    CreateOrder,
    DialogEnded,
    DialogOptions,
    DialogState,
    Effect,
    ReceivedFile,
    Reply,
    StepResult,
    detect_language,
    error_reply,
    file_room,
    order_lines,
    render_buttons_as_text,
    step,
    wants_files,
)
from orderbot.dialog.flow import Catalog, CatalogEntry, Flow, Step, load_flow
from orderbot.dialog.validators import VALIDATORS, Invalid, Valid, ValidationResult, Validator

__all__ = [
    "VALIDATORS",
    "Catalog",
    "CatalogEntry",
    "CreateOrder",
    "DialogEnded",
    "DialogOptions",
    "DialogState",
    "Effect",
    "Flow",
    "Invalid",
    "ReceivedFile",
    "Reply",
    "Step",
    "StepResult",
    "Valid",
    "ValidationResult",
    "Validator",
    "detect_language",
    "error_reply",
    "file_room",
    "load_flow",
    "order_lines",
    "render_buttons_as_text",
    "step",
    "wants_files",
]
