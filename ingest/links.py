"""Signed, expiring links (one-click unsubscribe, confirmed opt-in) carrying no personal data.

A token names the person only by the keyed hash of their e-mail, so a link in a
mail log or a browser history reveals nothing without the pepper.

A token is `payload.signature`, both unpadded base64url; the payload is the JSON claim
{a: action, h: e-mail hash (hex), i: issued at (Unix microseconds), e: expires at (Unix
seconds), n: random nonce, c: consent id (confirm only)}. Only the canonical encoding of
each segment verifies, so one claim has exactly one token: a used confirmation link
cannot come back with `=` padding or other spare bits as a "new" one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ingest.errors import InvalidLink

# access: the mailed self-service link (single use); access-session: the page it opens
# acts with a short-lived one of its own (object, ask for erasure, download).
_ACTIONS = frozenset({"unsubscribe", "confirm", "access", "access-session"})
# The lifetime make_token gives when not told: within the cap of either action at its
# default ([limits] confirm_link_days). The service and the CLI pass the configured one.
DEFAULT_DAYS = 7
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """What a verified link allows."""

    action: str
    email_hash: bytes
    consent_id: str | None
    expires_at: datetime
    issued_at: datetime | None  # None: an unsubscribe link made before links carried it
    digest: bytes  # SHA-256 of the signature: names this one link, nothing about the person


def _key(pepper: str) -> bytes:
    # A key of its own, derived from the pepper: link signatures never equal suppression hashes.
    return hmac.new(pepper.encode(), b"qualitydesk-ingest signed links v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Decode canonical unpadded base64url only; anything else is a ValueError.

    The standard decoder skips characters outside the alphabet, accepts padding and
    ignores the spare low bits of the last character: each would give a second text
    for the same bytes.
    """
    if not _B64URL_RE.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical encoding")
    return data


def make_token(
    pepper: str,
    action: str,
    email_hash: bytes,
    now: datetime,
    days: float = DEFAULT_DAYS,
    consent_id: str | None = None,
) -> str:
    """Sign a claim issued `now`, valid for `days`."""
    if action not in _ACTIONS:
        raise ValueError("unknown link action")
    lifetime = timedelta(days=days)
    claim: dict[str, object] = {
        "a": action,
        "h": email_hash.hex(),
        "i": (now - _EPOCH) // _MICROSECOND,
        "e": (now + lifetime - _EPOCH) // timedelta(seconds=1),  # exact: floats may round up
        "n": secrets.token_urlsafe(12),
    }
    if consent_id is not None:
        claim["c"] = consent_id
    payload = _b64(json.dumps(claim, separators=(",", ":"), sort_keys=True).encode())
    signature = _b64(hmac.new(_key(pepper), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def verify_token(pepper: str, token: str, action: str, now: datetime, max_days: float) -> LinkClaim:
    """The claim of a genuine, unexpired `action` token lasting at most `max_days`; else InvalidLink."""
    try:
        payload, signature = token.split(".")
        signature_bytes = _unb64(signature)
        _unb64(payload)  # canonical too, before anything else looks at it
        expected = hmac.new(_key(pepper), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature_bytes):
            raise InvalidLink
        claim = json.loads(_unb64(payload))
        parsed = LinkClaim(
            action=str(claim["a"]),
            email_hash=bytes.fromhex(claim["h"]),
            consent_id=_optional_text(claim.get("c")),
            expires_at=datetime.fromtimestamp(_integer(claim["e"]), tz=UTC),
            issued_at=None if "i" not in claim else _EPOCH + _integer(claim["i"]) * _MICROSECOND,
            digest=hashlib.sha256(signature_bytes).digest(),
        )
    except (ValueError, KeyError, TypeError, OverflowError, OSError):  # OverflowError/OSError: fromtimestamp
        raise InvalidLink from None
    if parsed.action != action or parsed.expires_at <= now:
        raise InvalidLink
    longest = timedelta(days=max_days)
    if parsed.issued_at is None:
        # A link from before issue times: only an unsubscribe link (so that one already
        # mailed still works), and only if what is left of it is within the cap.
        if action != "unsubscribe" or parsed.expires_at - now > longest:
            raise InvalidLink
    elif not timedelta(0) < parsed.expires_at - parsed.issued_at <= longest:
        raise InvalidLink
    return parsed


def _integer(value: object) -> int:
    # bool is an int in Python; a time given as `true` is not a time.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError("a time is an integer")


def _optional_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError("a consent id is text")
