"""Contact details a customer types: a delivery address (or a person's name, read the same way),
a phone number and an e-mail address. Each ``parse_*`` trims what it can and rejects the rest.

Separate from the registry (:mod:`orderbot.dialog.validators.registry`) and from the
word-based readers (:mod:`orderbot.dialog.validators.quantities`,
:mod:`orderbot.dialog.validators.choices`): these read free-form values with their own
libraries (``phonenumbers``, ``email-validator``).
"""

from __future__ import annotations

import functools
import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from orderbot.dialog.validators.base import SPACES, Invalid, Valid, ValidationResult

__all__ = ["parse_address", "parse_email", "parse_phone"]


# --------------------------------------------------------------------------------------------
# address


def parse_address(text: str, *, min_length: int = 5, max_length: int = 200) -> ValidationResult:
    """Trim and fold inner whitespace; the result must be ``min_length``..``max_length``
    characters long and contain a letter (a bare number is not an address)."""
    folded = SPACES.sub(" ", text).strip()
    if len(folded) < min_length:
        return Invalid("too_short")
    if len(folded) > max_length:
        return Invalid("too_long")
    if not any(ch.isalpha() for ch in folded):
        return Invalid("no_letters")
    return Valid(folded)


# --------------------------------------------------------------------------------------------
# phone

# A run of digits with the separators people type inside phone numbers.
_DIGIT_RUN = re.compile(r"\+?\d[\d\s\-().]*\d")


@functools.lru_cache(maxsize=4096)
def parse_phone(text: str, *, region: str = "KG") -> ValidationResult:
    """Find a valid phone number in ``text`` and return it as E.164 (``+996555123456``).

    Local forms are read in ``region``. ``PhoneNumberMatcher`` finds numbers inside sentences;
    it skips bare national numbers (``555123456``) and a country code without ``+``
    (``996555123456``), so digit runs are tried again explicitly. Results are cached: the
    same number is read when found in a message and again when its step validates it.
    """
    for match in phonenumbers.PhoneNumberMatcher(text, region):
        if phonenumbers.is_valid_number(match.number):
            return Valid(
                phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            )
    for run in _DIGIT_RUN.findall(text):
        digits = re.sub(r"\D", "", run)
        if not 6 <= len(digits) <= 15:
            continue
        # A leading + means the customer gave the country code: never read it as local.
        candidates = ["+" + digits] if run.startswith("+") else [digits, "+" + digits]
        for candidate in candidates:
            try:
                number = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return Valid(
                    phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                )
    return Invalid("invalid")


# --------------------------------------------------------------------------------------------
# email


def parse_email(text: str) -> ValidationResult:
    """A syntactically valid e-mail address (no DNS lookup), normalised by ``email-validator``.
    A sentence around it is allowed: the one word holding an ``@`` is taken."""
    candidates = [word.strip(".,;:!?()<>\"'") for word in text.split() if "@" in word]
    if len(candidates) != 1:
        return Invalid("invalid")
    try:
        info = validate_email(candidates[0], check_deliverability=False)
    except EmailNotValidError:
        return Invalid("invalid")
    return Valid(info.normalized)
