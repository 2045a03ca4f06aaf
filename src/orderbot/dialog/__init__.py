"""The dialog: a pure engine driven by flows that are data (YAML), with named validators."""

from __future__ import annotations

from orderbot.dialog.engine import (
    CreateOrder,
    DialogEnded,
    DialogOptions,
    DialogState,
    Effect,
    Reply,
    StepResult,
    detect_language,
    error_reply,
    render_buttons_as_text,
    step,
)
from orderbot.dialog.flow import Flow, Step, load_flow
from orderbot.dialog.validators import VALIDATORS, Invalid, Valid, ValidationResult, Validator

__all__ = [
    "VALIDATORS",
    "CreateOrder",
    "DialogEnded",
    "DialogOptions",
    "DialogState",
    "Effect",
    "Flow",
    "Invalid",
    "Reply",
    "Step",
    "StepResult",
    "Valid",
    "ValidationResult",
    "Validator",
    "detect_language",
    "error_reply",
    "load_flow",
    "render_buttons_as_text",
    "step",
]
