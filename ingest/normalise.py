"""Pure normalisers for the four personal fields; they only ever raise ValidationError."""

from __future__ import annotations

import functools
import re
import unicodedata

import email_validator
import phonenumbers
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
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
# The common address, checked without the full parser: an ASCII dot-atom local part
# (RFC 5322 atext, as email-validator's DOT_ATOM_TEXT) and a domain of ASCII letters,
# digits, hyphens and dots, whose verdict the library gives once and we cache.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_COMMON_EMAIL = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([A-Za-z0-9.-]+)")
# Local parts email-validator lower-cases (RFC 2142 role mailboxes).
_CASELESS_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_DOMAIN_CACHE_SIZE = 4096  # distinct domains remembered; a miss costs one full check
_INVALID_EMAIL = "Not a valid e-mail address."


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
    """Check syntax (no DNS), lower-case and IDNA-normalise the domain; at most 254 characters.

    The common address takes a fast path that gives exactly what the full check
    (`email_full`) gives, proven over a generated corpus in tests/test_normalise_fast.py.
    """
    cleaned = _clean(value, keep_newline=False).strip()
    if not cleaned:
        return None
    if len(cleaned) > EMAIL_MAX:
        raise ValidationError(f"Longer than {EMAIL_MAX} characters.")
    common = _COMMON_EMAIL.fullmatch(cleaned)
    if common is None:
        return _checked_email(cleaned)
    local, domain = common[1], common[2]
    verdict = _domain_verdict(domain)
    if verdict is None:
        raise ValidationError(_INVALID_EMAIL)
    unicode_domain, ascii_domain = verdict
    if local.lower() in _CASELESS_MAILBOXES:
        local = local.lower()
    # The library's length checks: the address as given, normalised, and in IDNA ASCII.
    for address in (f"{local}@{unicode_domain}", f"{local}@{ascii_domain}"):
        if len(address.encode()) > EMAIL_MAX:
            raise ValidationError(_INVALID_EMAIL)
    return _finished_email(local, unicode_domain)


def email_full(value: str) -> str | None:
    """`email` without its fast path: every address through email-validator (the reference)."""
    cleaned = _clean(value, keep_newline=False).strip()
    if not cleaned:
        return None
    if len(cleaned) > EMAIL_MAX:
        raise ValidationError(f"Longer than {EMAIL_MAX} characters.")
    return _checked_email(cleaned)


def _validated(address: str) -> email_validator.ValidatedEmail:
    try:
        return email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        raise ValidationError(_INVALID_EMAIL) from None
    except (ValueError, UnicodeError):  # idna can fail on exotic labels
        raise ValidationError(_INVALID_EMAIL) from None


def _checked_email(cleaned: str) -> str:
    local, _, domain = _validated(cleaned).normalized.rpartition("@")
    return _finished_email(local, domain)


@functools.lru_cache(maxsize=_DOMAIN_CACHE_SIZE)
def _domain_verdict(domain: str) -> tuple[str, str] | None:
    """The library's verdict on a domain (its Unicode and IDNA ASCII forms), or None if refused.

    Asked with the shortest local part: an address refused for its length with it is
    refused with any other, since every length the library checks only grows.
    """
    try:
        result = _validated(f"x@{domain}")
    except ValidationError:
        return None
    return result.domain, result.ascii_domain


def _finished_email(local: str, domain: str) -> str:
    if len(local) > _LOCAL_MAX:
        raise ValidationError(_INVALID_EMAIL)
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
