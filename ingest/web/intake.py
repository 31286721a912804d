"""POST /v1/forms/{source} and /v1/chats/{source}: resolve, read, adapt, accept, render."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode

from aiohttp import web

from ingest import errors
from ingest.adapters import ADAPTERS
from ingest.adapters.base import Delivery, Ignored, Item, body_limit
from ingest.adapters.html import ADAPTER as HTML
from ingest.adapters.html import check_origin, stamp_key
from ingest.config import Source
from ingest.deadlines import within
from ingest.domain import InboundRequest, Outcome, RawSubmission
from ingest.mail.texts import pick_language
from ingest.schemas import CONTACT_REQUIRED
from ingest.web.form_page import error_page, stays_local, thanks_page
from ingest.web.inputs import client_address, read_body, resolve_source
from ingest.web.keys import (
    CONFIG,
    LIMITER,
    LOG_INFO,
    LOWERED_HEADERS,
    METRICS,
    PEPPER,
    SERVICE,
    SUBMITTED_FORM,
)

MAX_QUERY_PARAMETERS = 50
_STATUS = {"created": 201, "duplicate": 200, "updated": 200, "ignored": 202}


def secret_query(query_string: str) -> dict[str, str]:
    """Query parameters with '+' kept as '+' (the first of a repeated name wins).

    Only secrets travel in an intake URL (`?key=`, Crisp and Jotform): one pasted
    as-is that holds a '+' (base64) must not turn into a space, as form decoding would.
    """
    query: dict[str, str] = {}
    for pair in query_string.split("&")[:MAX_QUERY_PARAMETERS]:
        name, _, value = pair.partition("=")
        query.setdefault(unquote(name), unquote(value))
    return query


def wants_html(request: web.Request) -> bool:
    """A browser navigating (not a script asking for JSON)."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept


def _cors_headers(request: web.Request, source: Source) -> dict[str, str]:
    origin = request.headers.get("Origin", "")
    if origin in source.allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {}


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight for html sources posting with fetch()."""
    source = resolve_source(request)
    headers = _cors_headers(request, source)
    if not headers:
        raise errors.OriginNotAllowed
    headers.update(
        {
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Content-Type, Accept",
            "Access-Control-Max-Age": "600",
        }
    )
    return web.Response(status=204, headers=headers)


def check_rate(request: web.Request, source: Source, client: str) -> None:
    """The limits checked before the body is read: nothing here reads it or computes an HMAC.

    A browser (html) source is limited per client address, then as a whole. A signed
    source is limited as a whole only once a delivery has authenticated (see _process):
    unauthenticated traffic must not spend its real sender's budget. Here, an address
    whose authentications keep failing is refused at once.
    """
    limiter = request.app[LIMITER]
    if source.format == "html":
        limiter.per_client.take(client)
        limiter.per_source.take(source.name)
    else:
        limiter.auth_failures.check(client)


async def _admitted(request: web.Request, source: Source, client: str) -> list[Outcome]:
    """Take the address's and the worker's slots, check the limits, and process the delivery.

    An address past its failed-authentication budget gets its 429 only after a wait
    in the tarpit (limits.Tarpit), taken after its slots are given back: a sender
    flooding with bad signatures at full speed is slowed, and neither the worker's
    slots nor the address's (shared with its browser forms) are held meanwhile.
    Browsers (html sources) are never made to wait.
    """
    limiter = request.app[LIMITER]
    locked_out = False
    try:
        # The per-address cap first: an address over it takes none of the worker's slots.
        with limiter.per_client_concurrency.hold(client):
            try:
                check_rate(request, source, client)
            except errors.RateLimited:
                locked_out = source.format != "html"
                raise
            with limiter.concurrency:
                return await _process(request, source, client)
    finally:
        if locked_out:
            await limiter.tarpit.wait(client)


async def receive(request: web.Request) -> web.StreamResponse:
    """Handle one delivery from a form or chat source."""
    source = resolve_source(request)
    browser = source.format == "html" and wants_html(request)
    client = client_address(request, request.app[CONFIG].limits.trusted_proxy_hops)
    try:
        outcomes = await _admitted(request, source, client)
    except errors.IngestError as exc:
        metrics = request.app[METRICS]
        metrics.child(metrics.submissions, source.name, source.channel, f"rejected_{exc.code}").inc()
        if exc.code == "invalid_signature":
            metrics.child(metrics.signature_failures, source.name).inc()
        if browser and exc.status != 503:  # noqa: PLR2004 - a browser retries a 503 page itself
            request[LOG_INFO]["error"] = exc.code
            if source.error_url and not _stays_local(request):
                separator = "&" if "?" in source.error_url else "?"
                return _see_other(f"{source.error_url}{separator}{urlencode({'error': exc.code})}")
            return error_page(request, source, exc)
        raise
    _count(request, source, outcomes)
    headers = _cors_headers(request, source) if source.format == "html" else {}
    if len(outcomes) != 1:
        request[LOG_INFO].update(outcome="batch", count=len(outcomes))
        return web.json_response(
            {"status": "processed", "results": [_outcome_body(o) for o in outcomes]}, headers=headers
        )
    outcome = outcomes[0]
    request[LOG_INFO].update(_kind(outcome))
    if browser and outcome.status in ("created", "duplicate"):
        if source.success_url and not _stays_local(request):
            return _see_other(source.success_url)
        return thanks_page(request.app[CONFIG])
    status = ADAPTERS[source.format].success_status or _STATUS[outcome.status]
    return web.json_response(_outcome_body(outcome), status=status, headers=headers)


def _label(outcome: Outcome) -> str:
    """How an outcome is counted and logged: a decoy (a bot answered like a success) apart."""
    return "decoy" if outcome.decoy else outcome.status


def _kind(outcome: Outcome) -> dict[str, str | None]:
    """The log line's facts of an outcome (a decoy's reason: honeypot or too fast)."""
    return (
        {"outcome": _label(outcome), "reason": outcome.reason}
        if outcome.decoy
        else {"outcome": _label(outcome)}
    )


def _count(request: web.Request, source: Source, outcomes: list[Outcome]) -> None:
    metrics = request.app[METRICS]
    for outcome in outcomes:
        metrics.child(metrics.submissions, source.name, source.channel, _label(outcome)).inc()
        if outcome.status == "ignored":
            metrics.child(metrics.ignored, source.name, outcome.reason or "unspecified").inc()


async def _process(request: web.Request, source: Source, client: str) -> list[Outcome]:
    config = request.app[CONFIG]
    adapter = ADAPTERS[source.format]
    if adapter.needs_origin:
        # Refuse before reading: a wrong origin never gets to send a body.
        check_origin(source, _headers_only(request))
    received_at = datetime.now(UTC)
    limit = body_limit(adapter, source, config.limits.max_body_bytes)
    limiter = request.app[LIMITER]
    try:
        body = await read_body(request, limit, config.limits.body_timeout_seconds)
        inbound = InboundRequest(
            headers=_lowered_headers(request),
            query=secret_query(request.rel_url.raw_query_string),
            body=body,
            content_type=request.headers.get("Content-Type", ""),
            received_at=received_at,
        )
        if adapter.needs_origin:  # html: a 422 page re-renders the form; its stamp is signed
            request[SUBMITTED_FORM] = inbound
            items = HTML.parse(source, inbound, stamp_key=stamp_key(request.app[PEPPER]))
            # The person's browser says which language their mails should be in.
            language = pick_language(request.headers.get("Accept-Language"), config.mail.language)
            items = [replace(i, language=language) if isinstance(i, RawSubmission) else i for i in items]
        else:
            items = adapter.parse(source, inbound)
    except errors.ValidationFailed:
        # Adapters validate fields only after verifying: an authenticated sender's mistake.
        if adapter.needs_secret:
            limiter.per_source.take(source.name)
        raise
    except errors.IngestError:
        # Refused before it authenticated (bad signature or secret; a body that could not
        # be read or checked): the address's failure budget pays, never the source's.
        if adapter.needs_secret:
            limiter.auth_failures.spend(client)
        raise
    if adapter.needs_secret:
        limiter.per_source.take(source.name)
    if isinstance(items, Delivery):
        for key in items.absent_fields:  # config key paths, never values
            request.app[METRICS].mapped_field_absent.labels(source.name, key).inc()
    return await _accept_all(request.app[SERVICE], source, items, received_at)


async def _accept_all(
    service: Any, source: Source, items: Sequence[Item], received_at: datetime
) -> list[Outcome]:
    # The request has arrived in full: from now, committed or 503 within the deadline.
    deadline = service.deadline()

    async def accept_all() -> list[Outcome]:
        return [await _accept(service, source, item, received_at, deadline) for item in items]

    if service.answers_on_time(items):
        return await accept_all()  # the group-commit writer keeps the deadline itself
    return await within(deadline, accept_all())


async def _accept(
    service: Any, source: Source, item: Item, received_at: datetime, deadline: float
) -> Outcome:
    if isinstance(item, Ignored):
        if item.looks_like_success:
            # Honeypot: answer like a success with an id that was never stored.
            return Outcome("created", submission_id=uuid.uuid4(), reason=item.reason, decoy=True)
        return Outcome("ignored", reason=item.reason)
    try:
        outcome: Outcome = await service.accept(source, item, received_at, deadline)
    except errors.ValidationFailed as exc:
        if not item.drop_invalid:
            raise
        # A provider's webhook cannot fix a delivery without a usable e-mail or phone and
        # would retry a 4xx until it gives up (Webflow then deactivates the hook): DESIGN §8.
        return Outcome("ignored", reason=unusable_contact_reason(exc))
    return outcome


def unusable_contact_reason(exc: errors.ValidationFailed) -> str:
    """Why a provider's form delivery holds no usable contact: none given, or none valid."""
    given = any(m != CONTACT_REQUIRED for f in ("email", "phone") for m in exc.fields.get(f, ()))
    return "invalid_contact_details" if given else "no_contact_details"


def _stays_local(request: web.Request) -> bool:
    """A local trial (no public_url) posting from the service's own page is answered here."""
    return stays_local(request.app[CONFIG], _headers_only(request))


def _lowered_headers(request: web.Request) -> dict[str, str]:
    """The request's headers by lower-case name (the last of a repeated name wins), made once."""
    headers = request.get(LOWERED_HEADERS)
    if headers is None:
        headers = request[LOWERED_HEADERS] = {k.lower(): v for k, v in request.headers.items()}
    return headers


def _headers_only(request: web.Request) -> InboundRequest:
    return InboundRequest(
        headers=_lowered_headers(request),
        query={},
        body=b"",
        content_type="",
        received_at=datetime.now(UTC),
    )


def _outcome_body(outcome: Outcome) -> dict[str, Any]:
    if outcome.status == "ignored":
        return {"status": "ignored", "reason": outcome.reason}
    return {"status": outcome.status, "submission_id": str(outcome.submission_id)}


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
