"""The public pages behind the signed links a person receives: unsubscribe and confirm.

No login: the link's token (ingest/links.py) is the authority, for one action and a
limited time. A GET only asks; the POST (the page's button, or RFC 8058 one-click) acts.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from aiohttp import web

from ingest import errors, rights
from ingest.links import LinkClaim, verify_token
from ingest.mail.texts import pick_language
from ingest.web.inputs import bounded
from ingest.web.keys import CONFIG, PEPPER, POOL

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
    await bounded(request, rights.unsubscribe(request.app[POOL], claim.email_hash, request.app[PEPPER]))
    return _page("Unsubscribed", f"You will not receive marketing e-mails from {_sender(request)} any more.")


async def confirm_page(request: web.Request) -> web.Response:
    """GET: ask the person to confirm their opt-in (if the link would still work; changes nothing)."""
    config = request.app[CONFIG]
    try:
        claim = _claim(request, "confirm")
        # Already used, or issued before a later objection: say so now, not after the click.
        pool, pepper = request.app[POOL], request.app[PEPPER]
        await bounded(request, rights.confirm_opt_in(pool, config, claim, pepper, check_only=True))
    except errors.InvalidLink:
        return _page("Link not valid", "This confirmation link is not valid or has expired.", status=400)
    consent = config.consents[claim.consent_id or ""]  # confirm_opt_in checked it exists
    return _page("Confirm your subscription", consent.text, _button("Confirm"))


async def confirm(request: web.Request) -> web.Response:
    """POST: the confirmed opt-in lifts a marketing suppression and records the consent (once)."""
    try:
        claim = _claim(request, "confirm")
        config = request.app[CONFIG]
        language = pick_language(request.headers.get("Accept-Language"), config.mail.language)
        await bounded(
            request,
            rights.confirm_opt_in(request.app[POOL], config, claim, request.app[PEPPER], language=language),
        )
    except errors.InvalidLink:
        return _page("Link not valid", "This confirmation link is not valid or has expired.", status=400)
    return _page("Confirmed", "Thank you: your subscription is confirmed.")


def add_routes(app: web.Application) -> None:
    """Register the signed-link pages."""
    app.router.add_get("/v1/unsubscribe", unsubscribe_page)
    app.router.add_post("/v1/unsubscribe", unsubscribe)
    app.router.add_get("/v1/confirm", confirm_page)
    app.router.add_post("/v1/confirm", confirm)
