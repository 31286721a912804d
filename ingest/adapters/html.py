"""Browser form posts (urlencoded or multipart), checked by Origin, with a honeypot and a fill-time stamp.

The fill-time check (`min_fill_seconds`) reads a hidden stamp signed by this service
(`<unix milliseconds>.<signature>`): the service's own form page writes one when it renders,
and an embedded form (`ingest form-snippet`) fetches one from
`GET /v1/forms/{source}/stamp` when it is shown. A stamp cannot be made up or pasted
once as a constant: unsigned, expired or missing, it is refused with a 422 that asks
the person to send the form again (the service's 422 page re-renders it, filled in,
with a fresh stamp). A genuine stamp younger than `min_fill_seconds` is a bot posting
at once: answered like a success, nothing stored.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from ingest.adapters.base import BaseAdapter, Ignored, Item
from ingest.adapters.bodies import form_pairs
from ingest.config import CANONICAL_FIELDS, Source
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, OriginNotAllowed, ValidationFailed

# Hidden field holding the signed stamp of when the form was shown (minimum fill time).
RENDERED_AT_FIELD = "_rendered_at"
# A stamp older than this is refused (the page sat open for hours: the form comes back,
# filled in, with a fresh stamp). A stamp proves a wait, not a single use: a short life
# bounds how long one wait can be reused (and the per-address rate limit, how often).
# The snippet's script fetches a new stamp after an hour.
STAMP_MAX_AGE_SECONDS = 4 * 3600
# Replicas' clocks differ a little: a stamp this far in the future is still genuine.
STAMP_CLOCK_SKEW_SECONDS = 5
STAMP_REFUSED = "The form has expired or could not be checked. Please send it again."
_STAMP_SIGNATURE_BYTES = 16


@functools.lru_cache(maxsize=8)
def stamp_key(pepper: str) -> bytes:
    """The stamps' signing key: derived from the pepper, so every replica and worker shares it."""
    return hmac.new(pepper.encode(), b"qualitydesk-ingest form stamps v1", hashlib.sha256).digest()


def _signature(key: bytes, source: str, millis: int) -> str:
    digest = hmac.new(key, f"{source}:{millis}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:_STAMP_SIGNATURE_BYTES]).rstrip(b"=").decode()


def make_stamp(key: bytes, source: str, now: float | None = None) -> str:
    """A stamp saying the form of `source` was shown at `now` (default: the current time)."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis}.{_signature(key, source, millis)}"


def stamp_issued_at(key: bytes | None, source: str, stamp: str | None, now: float) -> float | None:
    """When (Unix seconds) a genuine, unexpired stamp of `source` was issued; None for anything else."""
    if key is None or not stamp:
        return None
    millis_text, _, signature = stamp.partition(".")
    if not millis_text.isascii() or not millis_text.isdigit() or len(millis_text) > 15:  # noqa: PLR2004
        return None
    millis = int(millis_text)
    if not hmac.compare_digest(signature.encode(), _signature(key, source, millis).encode()):
        return None
    issued = millis / 1000
    if not -STAMP_CLOCK_SKEW_SECONDS <= now - issued <= STAMP_MAX_AGE_SECONDS:
        return None
    return issued


class HtmlAdapter(BaseAdapter):
    """A plain HTML form on an allowed origin; the form's own field names are mapped."""

    name: ClassVar[str] = "html"
    content_types: ClassVar[frozenset[str]] = frozenset(
        {"application/x-www-form-urlencoded", "multipart/form-data"}
    )

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """The honeypot must not collide with a mapped field."""
        used = {source.field_map.get(f, f) for f in CANONICAL_FIELDS} | set(source.consent_fields)
        if source.honeypot_field in used | {RENDERED_AT_FIELD}:
            raise ConfigError(f"{key('honeypot_field')}: collides with a form field")

    def parse(
        self, source: Source, request: InboundRequest, *, stamp_key: bytes | None = None
    ) -> Sequence[Item]:
        """Check the Origin, read the form, check the bot traps, map fields and consent checkboxes.

        `stamp_key` verifies the fill-time stamp; without it (and with `min_fill_seconds`)
        no stamp is genuine.
        """
        check_origin(source, request)
        form = read_form(self, request)
        if form.get(source.honeypot_field, "").strip():
            return [Ignored("honeypot", looks_like_success=True)]
        stamp = form.get(RENDERED_AT_FIELD)
        if source.min_fill_seconds and _filled_too_fast(stamp, source, request, stamp_key):
            return [Ignored("too_fast", looks_like_success=True)]
        fields: dict[str, object] = {}
        for canonical in CANONICAL_FIELDS:
            form_name = source.field_map.get(canonical, canonical)
            if form_name in form:
                fields[canonical] = form[form_name]
        consents: dict[str, object] = {
            consent_id: form.get(form_field, "") for form_field, consent_id in source.consent_fields.items()
        }
        return [RawSubmission(fields=fields, consents=consents)]


def read_form(adapter: HtmlAdapter, request: InboundRequest) -> dict[str, str]:
    """The posted form as one value per name (the first wins, as browsers send one)."""
    form: dict[str, str] = {}
    for key, value in form_pairs(adapter, request):
        form.setdefault(key, value)
    return form


def check_origin(source: Source, request: InboundRequest) -> None:
    """A browser post must come from one of the source's origins (CSRF and abuse guard)."""
    origin = posting_origin(request)
    if origin is None:
        raise OriginNotAllowed
    if origin not in source.allowed_origins and not from_own_page(request):
        raise OriginNotAllowed


def posting_origin(request: InboundRequest) -> str | None:
    """The Origin of a post (or the origin of its Referer when a browser sent `null` or none)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer", "")
        parts = referer.split("/", 3)
        origin = "/".join(parts[:3]) if len(parts) >= 3 else None  # noqa: PLR2004 - scheme://host
    return None if origin is None else origin.rstrip("/")


def from_own_page(request: InboundRequest) -> bool:
    """Posted from a page of this service (its example form, or its 422 page): same origin."""
    origin = posting_origin(request)
    return origin is not None and origin.split("://", 1)[-1] == request.headers.get("host")


def _filled_too_fast(stamp: str | None, source: Source, request: InboundRequest, key: bytes | None) -> bool:
    now = request.received_at.timestamp() if request.received_at else time.time()
    issued = stamp_issued_at(key, source.name, stamp, now)
    if issued is None:
        # Missing, unsigned (a pasted constant), expired or forged: not a human's fill time.
        # Refused visibly, not dropped: a person whose page could not fetch a stamp sends again.
        raise ValidationFailed({"form": [STAMP_REFUSED]})
    return now - issued < source.min_fill_seconds


ADAPTER = HtmlAdapter()
