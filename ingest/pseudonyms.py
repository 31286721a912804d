"""Keyed hashes of normalised e-mail and phone, so a suppression outlives erasure."""

from __future__ import annotations

import hashlib
import hmac


def keyed_hash(pepper: str, kind: str, value: str) -> bytes:
    """HMAC-SHA256(pepper, kind:value): unlinkable without the pepper, stable with it."""
    return hmac.new(pepper.encode("utf-8"), f"{kind}:{value}".encode(), hashlib.sha256).digest()


def email_key(pepper: str, email: str) -> bytes:
    """The suppression key of a normalised e-mail (case-insensitive, like de-duplication)."""
    return keyed_hash(pepper, "email", email.lower())


def phone_key(pepper: str, phone: str) -> bytes:
    """The suppression key of an E.164 phone number."""
    return keyed_hash(pepper, "phone", phone)
