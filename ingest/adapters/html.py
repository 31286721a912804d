"""Browser form posts (urlencoded or multipart), checked by Origin, with a honeypot."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from ingest.adapters.base import BaseAdapter, Ignored, Item, form_pairs
from ingest.config import CANONICAL_FIELDS, Source
from ingest.domain import Channel, InboundRequest, RawSubmission
from ingest.errors import ConfigError, OriginNotAllowed

# Hidden field holding the Unix time the form was rendered (minimum fill time).
RENDERED_AT_FIELD = "_rendered_at"


class HtmlAdapter(BaseAdapter):
    """A plain HTML form on an allowed origin; the form's own field names are mapped."""

    name: ClassVar[str] = "html"
    channels: ClassVar[frozenset[Channel]] = frozenset({"form"})
    needs_secret: ClassVar[bool] = False
    needs_origin: ClassVar[bool] = True
    content_types: ClassVar[frozenset[str]] = frozenset(
        {"application/x-www-form-urlencoded", "multipart/form-data"}
    )

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """The honeypot must not collide with a mapped field."""
        used = {source.field_map.get(f, f) for f in CANONICAL_FIELDS} | set(source.consent_fields)
        if source.honeypot_field in used:
            raise ConfigError(f"{key('honeypot_field')}: collides with a form field")

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Check the Origin, read the form, map fields and consent checkboxes."""
        check_origin(source, request)
        pairs = form_pairs(self, request)
        form: dict[str, str] = {}
        for key, value in pairs:
            form.setdefault(key, value)  # first value wins, as browsers send one
        if form.get(source.honeypot_field, "").strip():
            return [Ignored("honeypot", looks_like_success=True)]
        if source.min_fill_seconds and _filled_too_fast(form.get(RENDERED_AT_FIELD), source, request):
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


def check_origin(source: Source, request: InboundRequest) -> None:
    """A browser post must come from one of the source's origins (CSRF and abuse guard)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer", "")
        parts = referer.split("/", 3)
        origin = "/".join(parts[:3]) if len(parts) >= 3 else None  # noqa: PLR2004 - scheme://host
    if origin is None:
        raise OriginNotAllowed
    origin = origin.rstrip("/")
    # The service's own example form (GET /v1/forms/{source}) posts same-origin.
    same_origin = origin.split("://", 1)[-1] == request.headers.get("host")
    if origin not in source.allowed_origins and not same_origin:
        raise OriginNotAllowed


def _filled_too_fast(rendered_at: str | None, source: Source, request: InboundRequest) -> bool:
    try:
        started = float(rendered_at) if rendered_at else None
    except ValueError:
        return True
    if started is None:
        return False  # a form not rendered by us carries no timestamp
    now = request.received_at.timestamp() if request.received_at else time.time()
    return now - started < source.min_fill_seconds


ADAPTER = HtmlAdapter()
