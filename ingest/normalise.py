"""Pure normalisers for the four personal fields; they only ever raise ValidationError."""

from __future__ import annotations

import re
import unicodedata

import email_validator
import phonenumbers
from marshmallow import ValidationError

NAME_MAX = 200
EMAIL_MAX = 254
_LOCAL_MAX = 64  # RFC 5321 4.5.3.1.1
MESSAGE_MAX = 5000
_PHONE_INPUT_MAX = 64

# Cc (C0/C1 controls), Cs (lone surrogates), Co/Cn are never wanted; from Cf we drop
# the bidirectional overrides and isolates (text spoofing) but keep ZWJ/ZWNJ,
# which some scripts need in names.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
_SPACES = re.compile(r"[^\S\n]+")
# Characters that need a closer look: anything outside printable ASCII and newline.
# Plain ASCII text (most of it) passes with one regex scan instead of a call per character.
_SUSPECT = re.compile(r"[^\x20-\x7e\n]")
_BLANK_LINES = re.compile(r"\n{3,}")


def _is_unwanted(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn") or char in _BIDI_CONTROLS


def _keep_wanted(match: re.Match[str]) -> str:
    char = match[0]
    return "" if _is_unwanted(char) else char


def _clean(value: str, *, keep_newline: bool) -> str:
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = value.replace("\t", " ")
    if not keep_newline:
        value = value.replace("\n", " ")
    value = _SUSPECT.sub(_keep_wanted, value)
    if value.isascii():
        return value  # ASCII is already in NFC
    return unicodedata.normalize("NFC", value)


def name(value: str) -> str | None:
    """Trim, NFC, drop control characters, fold runs of spaces; at most 200 characters."""
    cleaned = _SPACES.sub(" ", _clean(value, keep_newline=False)).strip()
    if not cleaned:
        return None
    if len(cleaned) > NAME_MAX:
        raise ValidationError(f"Longer than {NAME_MAX} characters.")
    return cleaned


def email(value: str) -> str | None:
    """Check syntax (no DNS), lower-case and IDNA-normalise the domain; at most 254 characters."""
    cleaned = _clean(value, keep_newline=False).strip()
    if not cleaned:
        return None
    if len(cleaned) > EMAIL_MAX:
        raise ValidationError(f"Longer than {EMAIL_MAX} characters.")
    try:
        result = email_validator.validate_email(cleaned, check_deliverability=False)
    except email_validator.EmailNotValidError:
        raise ValidationError("Not a valid e-mail address.") from None
    except (ValueError, UnicodeError):  # idna can fail on exotic labels
        raise ValidationError("Not a valid e-mail address.") from None
    local, _, domain = result.normalized.rpartition("@")
    if len(local) > _LOCAL_MAX:
        raise ValidationError("Not a valid e-mail address.")
    normalised = f"{local}@{domain.lower()}"
    if len(normalised) > EMAIL_MAX:
        raise ValidationError(f"Longer than {EMAIL_MAX} characters.")
    return normalised


def phone(value: str, default_region: str) -> str | None:
    """Parse with the default region for national numbers; return E.164."""
    cleaned = _clean(value, keep_newline=False).strip()
    if not cleaned:
        return None
    if len(cleaned) > _PHONE_INPUT_MAX:
        raise ValidationError("Not a valid phone number.")
    try:
        number = phonenumbers.parse(cleaned, default_region)
    except phonenumbers.NumberParseException:
        raise ValidationError("Not a valid phone number.") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError("Not a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def message(value: str) -> str | None:
    """Trim, NFC, drop control characters but newlines; at most 5000 characters."""
    cleaned = _clean(value, keep_newline=True)
    lines = [_SPACES.sub(" ", line).strip() for line in cleaned.split("\n")]
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    if not text:
        return None
    if len(text) > MESSAGE_MAX:
        raise ValidationError(f"Longer than {MESSAGE_MAX} characters.")
    return text
