"""Admin API (data subject rights, bearer tokens with scopes) and the signed-link pages."""

from __future__ import annotations

import hashlib
import hmac
import html
from datetime import UTC, datetime

from aiohttp import web

from ingest import errors, rights
from ingest.adapters.base import parse_json_object, text_bytes
from ingest.links import LinkClaim, verify_token
from ingest.web.intake import client_address, read_body
from ingest.web.keys import CONFIG, LIMITER, LOG_INFO, PEPPER, POOL


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


def _subject(request: web.Request) -> rights.Subject:
    return rights.subject_from(request.app[CONFIG], request.query.get("email"), request.query.get("phone"))


async def export_subject(request: web.Request) -> web.Response:
    """GET /v1/subjects?email=|phone=: everything held on the person."""
    actor = authorize(request, "export")
    document = await rights.export(request.app[POOL], _subject(request), request.app[PEPPER], actor)
    return web.json_response(document)


async def erase_subject(request: web.Request) -> web.Response:
    """DELETE /v1/subjects?email=|phone=: erase the person, report what was removed."""
    actor = authorize(request, "erase")
    report = await rights.erase(request.app[POOL], _subject(request), request.app[PEPPER], actor)
    return web.json_response({"status": "erased", "removed": report})


async def opt_out_subject(request: web.Request) -> web.Response:
    """POST /v1/subjects/opt-out {"email"|"phone"}: direct-marketing objection."""
    actor = authorize(request, "opt-out")
    config = request.app[CONFIG]
    body = await read_body(request, config.limits.max_body_bytes, config.limits.body_timeout_seconds)
    payload = parse_json_object(body)
    subject = rights.subject_from(config, payload.get("email"), payload.get("phone"))
    report = await rights.opt_out(request.app[POOL], subject, request.app[PEPPER], actor)
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


async def unsubscribe_page(request: web.Request) -> web.Response:
    """GET: ask for confirmation (mail scanners follow links; only POST unsubscribes)."""
    try:
        _claim(request, "unsubscribe")
    except errors.InvalidLink:
        return _page("Link not valid", "This unsubscribe link is not valid or has expired.", status=400)
    return _page("Unsubscribe", "Stop QualityDesk marketing e-mails to this address?", _button("Unsubscribe"))


async def unsubscribe(request: web.Request) -> web.Response:
    """POST (RFC 8058 one-click, or the page's button): record the objection, no login."""
    try:
        claim = _claim(request, "unsubscribe")
    except errors.InvalidLink:
        return _page("Link not valid", "This unsubscribe link is not valid or has expired.", status=400)
    await rights.unsubscribe(request.app[POOL], claim.email_hash)
    return _page("Unsubscribed", "You will not receive QualityDesk marketing e-mails any more.")


async def confirm_page(request: web.Request) -> web.Response:
    """GET: ask the person to confirm their opt-in (if the link would still work; changes nothing)."""
    config = request.app[CONFIG]
    try:
        claim = _claim(request, "confirm")
        # Already used, or issued before a later objection: say so now, not after the click.
        await rights.confirm_opt_in(request.app[POOL], config, claim, check_only=True)
    except errors.InvalidLink:
        return _page("Link not valid", "This confirmation link is not valid or has expired.", status=400)
    consent = config.consents[claim.consent_id or ""]  # confirm_opt_in checked it exists
    return _page("Confirm your subscription", consent.text, _button("Confirm"))


async def confirm(request: web.Request) -> web.Response:
    """POST: the confirmed opt-in lifts a marketing suppression and records the consent (once)."""
    try:
        claim = _claim(request, "confirm")
        await rights.confirm_opt_in(request.app[POOL], request.app[CONFIG], claim)
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
