"""Log configuration, applied once by the CLI: console or JSON lines, personal data masked.

Code masks what it logs (``loggers.mask_phone``/``mask_text``); the filter here is the safety
net that masks anything phone-shaped that slipped into a formatted line, and escapes control
characters (``\n`` becomes the two characters ``\\n``), so a value a customer sent can never start
a forged log line or move the terminal's cursor.
"""

from __future__ import annotations

import logging
import re
import sys
import time

import orjson

from orderbot.loggers import mask_phone

__all__ = ["JsonFormatter", "MaskingFilter", "setup_logging"]

_PHONE_LIKE = re.compile(r"(?<![\w.])\+?\d(?:[\s\-()]?\d){8,14}(?![\w.])")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


class MaskingFilter(logging.Filter):
    """Masks phone-shaped digit runs (9 to 15 digits) in the formatted message and escapes its
    control characters: one record is one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _PHONE_LIKE.sub(lambda m: mask_phone(m.group(0)), _CONTROL.sub(_escape, message))
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(level: str = "INFO", fmt: str = "console") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own handlers would print unmasked duplicates; route them through ours.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request at INFO: thousands of lines a second, with client URLs.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("httpcore").setLevel(max(logging.WARNING, root.level))
