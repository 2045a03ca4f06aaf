"""Named loggers, and the masking every log line with personal data goes through.

Library code only gets loggers here; handlers are configured once by the CLI (``logs.setup``).
"""

from __future__ import annotations

import logging
import re

__all__ = [
    "console",
    "dialog",
    "ingress",
    "mask_phone",
    "mask_text",
    "sender",
    "storage",
    "worker",
]

ingress = logging.getLogger("orderbot.ingress")
worker = logging.getLogger("orderbot.worker")
sender = logging.getLogger("orderbot.sender")
dialog = logging.getLogger("orderbot.dialog")
storage = logging.getLogger("orderbot.storage")
console = logging.getLogger("orderbot.console")  # what operators do in the web console

_DIGIT_RUN = re.compile(r"\+?\d[\d\s\-()]{5,}\d")
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")


def mask_phone(phone: str) -> str:
    """Keep the country prefix and the last two digits: ``+996555123456`` -> ``+996*******56``."""
    digits = [c for c in phone if c.isdigit()]
    if len(digits) < 5:
        return "*" * len(phone)
    keep_head = 4 if phone.startswith("+") else 3
    head = ("+" if phone.startswith("+") else "") + "".join(digits[: keep_head - 1])
    return head + "*" * (len(digits) - (keep_head - 1) - 2) + "".join(digits[-2:])


def mask_text(text: str, *, keep: int = 0) -> str:
    """Mask what a customer wrote: digit runs (phones), e-mails, and, unless ``keep`` > 0,
    everything but the length. Customer text can hold an address or a name, so by default a
    log line only says how long it was."""
    if keep <= 0:
        return f"<{len(text)} chars>"
    shown = _DIGIT_RUN.sub(lambda m: mask_phone(m.group(0)), text[:keep])
    shown = _EMAIL.sub(r"\1***@\2", shown)
    return shown + ("…" if len(text) > keep else "")
