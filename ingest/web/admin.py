"""Admin API (data subject rights, bearer tokens with scopes) and the signed-link pages."""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web

from ingest import errors, rights
from ingest.adapters.bodies import parse_json_object, text_bytes
from ingest.deadlines import within
from ingest.links import LinkClaim, verify_token
from ingest.web.intake import client_address, read_body
from ingest.web.keys import CONFIG, LIMITER, LOG_INFO, PEPPER, POOL, SERVICE


def authorize(request: web.Request, scope: str) -> str:
    """The name of the bearer token if it is valid and has `scope`; else 401/403 (429 after many 401s)."""
    failures = request.app[LIMITER].admin_failures
    client = client_address(request, request.app[CONFIG].limits.trusted_proxy_hops)
    failures.check(client)  # an address that keeps guessing is refused before any comparison
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        failures.spend(client)
        raise errors.Unauthorized
    digest = hashlib.sha256(text_bytes(token.strip())).digest()
    matched = None
    for candidate in request.app[CONFIG].admin_tokens:
        # Every token is compared, so timing does not tell which one (if any) was close.
        if hmac.compare_digest(candidate.sha256, digest):
            matched = candidate
    if matched is None:
        failures.spend(client)
        raise errors.Unauthorized
    request[LOG_INFO]["token_name"] = matched.name
    if scope not in matched.scopes:
        raise errors.Forbidden
    return matched.name


T = TypeVar("T")


async def _bounded(request: web.Request, work: Awaitable[T]) -> T:
    """The database work of an admin or link request: done within the request deadline, else 503.

    These routes share the pool with intake: a held lock or a frozen server must not
    hold them (nor their callers) longer than a submission would be held.
    """
    return await within(request.app[SERVICE].deadline(), work)


def _subject(request: web.Request) -> rights.Subject:
    return rights.subject_from(request.app[CONFIG], request.query.get("email"), request.query.get("phone"))


async def export_subject(request: web.Request) -> web.Response:
    """GET /v1/subjects?email=|phone=: everything held on the person."""
    actor = authorize(request, "export")
    document = await _bounded(
        request, rights.export(request.app[POOL], _subject(request), request.app[PEPPER], actor)
    )
    return web.json_response(document)


async def erase_subject(request: web.Request) -> web.Response:
    """DELETE /v1/subjects?email=|phone=: erase the person, report what was removed."""
    actor = authorize(request, "erase")
    report = await _bounded(
        request, rights.erase(request.app[POOL], _subject(request), request.app[PEPPER], actor)
    )
    return web.json_response({"status": "erased", "removed": report})


async def opt_out_subject(request: web.Request) -> web.Response:
    """POST /v1/subjects/opt-out {"email"|"phone"}: direct-marketing objection."""
    actor = authorize(request, "opt-out")
    config = request.app[CONFIG]
    body = await read_body(request, config.limits.max_body_bytes, config.limits.body_timeout_seconds)
    payload = parse_json_object(body)
    subject = rights.subject_from(config, payload.get("email"), payload.get("phone"))
    report = await _bounded(request, rights.opt_out(request.app[POOL], subject, request.app[PEPPER], actor))
    return web.json_response({"status": "opted_out", "recorded": report})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head>
<body><main><h1>{title}</h1><p>{text}</p>{form}</main></body></html>"""


def _page(title: str, text: str, form: str = "", status: int = 200) -> web.Response:
    body = _PAGE.format(title=html.escape(title), text=html.escape(text), form=form)
    return web.Response(text=body, content_type="text/html", status=status)


def _button(label: str) -> str:
    # Posts back to the same URL (token in the query); works without JavaScript.
    return f'<form method="post"><button type="submit">{html.escape(label)}</button></form>'


def _claim(request: web.Request, action: str) -> LinkClaim:
    limits = request.app[CONFIG].limits
    max_days = limits.confirm_link_days if action == "confirm" else limits.unsubscribe_link_days
    return verify_token(
        request.app[PEPPER], request.query.get("token", ""), action, datetime.now(UTC), max_days
    )


def _sender(request: web.Request) -> str:
    # The controller as the config names it (escaped by _page), else a neutral "us".
    return request.app[CONFIG].controller or "us"


async def unsubscribe_page(request: web.Request) -> web.Response:
    """GET: ask for confirmation (mail scanners follow links; only POST unsubscribes)."""
    try:
        _claim(request, "unsubscribe")
    except errors.InvalidLink:
        return _page("Link not valid", "This unsubscribe link is not valid or has expired.", status=400)
    question = f"Stop marketing e-mails from {_sender(request)} to this address?"
    return _page("Unsubscribe", question, _button("Unsubscribe"))


async def unsubscribe(request: web.Request) -> web.Response:
    """POST (RFC 8058 one-click, or the page's button): record the objection, no login."""
    try:
        claim = _claim(request, "unsubscribe")
    except errors.InvalidLink:
        return _page("Link not valid", "This unsubscribe link is not valid or has expired.", status=400)
    await _bounded(request, rights.unsubscribe(request.app[POOL], claim.email_hash, request.app[PEPPER]))
    return _page("Unsubscribed", f"You will not receive marketing e-mails from {_sender(request)} any more.")


async def confirm_page(request: web.Request) -> web.Response:
    """GET: ask the person to confirm their opt-in (if the link would still work; changes nothing)."""
    config = request.app[CONFIG]
    try:
        claim = _claim(request, "confirm")
        # Already used, or issued before a later objection: say so now, not after the click.
        pool, pepper = request.app[POOL], request.app[PEPPER]
        await _bounded(request, rights.confirm_opt_in(pool, config, claim, pepper, check_only=True))
    except errors.InvalidLink:
        return _page("Link not valid", "This confirmation link is not valid or has expired.", status=400)
    consent = config.consents[claim.consent_id or ""]  # confirm_opt_in checked it exists
    return _page("Confirm your subscription", consent.text, _button("Confirm"))


async def confirm(request: web.Request) -> web.Response:
    """POST: the confirmed opt-in lifts a marketing suppression and records the consent (once)."""
    try:
        claim = _claim(request, "confirm")
        await _bounded(
            request, rights.confirm_opt_in(request.app[POOL], request.app[CONFIG], claim, request.app[PEPPER])
        )
    except errors.InvalidLink:
        return _page("Link not valid", "This confirmation link is not valid or has expired.", status=400)
    return _page("Confirmed", "Thank you: your subscription is confirmed.")


def add_routes(app: web.Application) -> None:
    """Register the admin and signed-link routes."""
    app.router.add_get("/v1/subjects", export_subject)
    app.router.add_delete("/v1/subjects", erase_subject)
    app.router.add_post("/v1/subjects/opt-out", opt_out_subject)
    app.router.add_get("/v1/unsubscribe", unsubscribe_page)
    app.router.add_post("/v1/unsubscribe", unsubscribe)
    app.router.add_get("/v1/confirm", confirm_page)
    app.router.add_post("/v1/confirm", confirm)
