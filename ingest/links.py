"""Signed, expiring links (one-click unsubscribe, confirmed opt-in) carrying no personal data.

A token names the person only by the keyed hash of their e-mail, so a link in a
mail log or a browser history reveals nothing without the pepper.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ingest.errors import InvalidLink

_ACTIONS = frozenset({"unsubscribe", "confirm"})


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """What a verified link allows."""

    action: str
    email_hash: bytes
    consent_id: str | None
    expires_at: datetime


def _key(pepper: str) -> bytes:
    # A key of its own, derived from the pepper: link signatures never equal suppression hashes.
    return hmac.new(pepper.encode(), b"qualitydesk-ingest signed links v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(
    pepper: str, action: str, email_hash: bytes, now: datetime, days: int = 30, consent_id: str | None = None
) -> str:
    """Sign a claim valid for `days`."""
    if action not in _ACTIONS:
        raise ValueError("unknown link action")
    claim = {"a": action, "h": email_hash.hex(), "e": int((now + timedelta(days=days)).timestamp())}
    if consent_id is not None:
        claim["c"] = consent_id
    payload = _b64(json.dumps(claim, separators=(",", ":"), sort_keys=True).encode())
    signature = _b64(hmac.new(_key(pepper), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def verify_token(pepper: str, token: str, action: str, now: datetime) -> LinkClaim:
    """Return the claim of a genuine, unexpired token for `action`; else raise InvalidLink."""
    try:
        payload, signature = token.split(".")
        expected = hmac.new(_key(pepper), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise InvalidLink
        claim = json.loads(_unb64(payload))
        expires_at = datetime.fromtimestamp(int(claim["e"]), tz=UTC)
        parsed = LinkClaim(
            action=str(claim["a"]),
            email_hash=bytes.fromhex(claim["h"]),
            consent_id=_optional_text(claim.get("c")),
            expires_at=expires_at,
        )
    except (ValueError, KeyError, TypeError, OverflowError, OSError):  # OverflowError/OSError: fromtimestamp
        raise InvalidLink from None
    if parsed.action != action or parsed.expires_at <= now:
        raise InvalidLink
    return parsed


def _optional_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError("a consent id is text")
