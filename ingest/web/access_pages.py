"""Self-service access (GDPR Art. 15, 20): a person sees what is held on them, by a mailed link.

GET/POST /v1/access         enter an e-mail address; the answer is the same page whether
                            or not the address is known (a known one is mailed a link)
GET  /v1/access/view        the link's page: one button (mail scanners only GET)
POST /v1/access/view        uses the link up and shows the data, with a session of its own
POST /v1/access/export      the same data as a JSON download
POST /v1/access/object      object to direct marketing
POST /v1/access/erase       ask for erasure (a request on the one-month clock, or at once)

Every step is audited (no identifier in the audit row), rate limited per address and per
client, and answered with no-store pages that send no Referer (the token is in the URL).
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ingest import errors, rights
from ingest.adapters.bodies import parse_urlencoded
from ingest.config import Config
from ingest.links import LinkClaim, make_token, verify_token
from ingest.mail.texts import pick_language, text
from ingest.web.inputs import bounded, client_address, read_body
from ingest.web.keys import CONFIG, LIMITER, LOG_INFO, PEPPER, POOL
from ingest.web.pages import page

MAX_FORM_BYTES = 4096
SESSION_MINUTES = 15  # the data page's own buttons work this long
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_MINUTES_PER_DAY = 24 * 60


def _language(request: web.Request) -> str:
    return pick_language(request.headers.get("Accept-Language"), request.app[CONFIG].mail.language)


def _controller(config: Config) -> str:
    return config.controller or config.mail.sender.rpartition("@")[2]


def _page(request: web.Request, title_key: str, body: str, status: int = 200) -> web.Response:
    response = page(text(_language(request), title_key), body, status=status, headers=_HEADERS)
    response.headers["Content-Language"] = _language(request)
    return response


def _p(request: web.Request, key: str, **values: str) -> str:
    return f"<p>{html.escape(text(_language(request), key, **values))}</p>"


def _button(action: str, label: str, token: str) -> str:
    target = html.escape(f"{action}?token={token}")
    return f'<form method="post" action="{target}"><button type="submit">{html.escape(label)}</button></form>'


def _email_form(request: web.Request) -> str:
    language = _language(request)
    return (
        '<form method="post" action="/v1/access" accept-charset="utf-8">'
        f'<label for="email">{html.escape(text(language, "page_email_label"))}</label>'
        '<input id="email" name="email" type="email" autocomplete="email" required maxlength="254">'
        f'<button type="submit">{html.escape(text(language, "page_access_submit"))}</button></form>'
    )


async def access_page(request: web.Request) -> web.Response:
    """GET /v1/access: the form asking for an e-mail address."""
    intro = _p(request, "page_access_intro", controller=_controller(request.app[CONFIG]))
    return _page(request, "page_access_title", intro + _email_form(request))


async def request_access(request: web.Request) -> web.Response:
    """POST /v1/access: mail a link if the address is known; the same answer either way."""
    config = request.app[CONFIG]
    limiter = request.app[LIMITER]
    body = await read_body(request, MAX_FORM_BYTES, config.limits.body_timeout_seconds)
    email = dict(parse_urlencoded(body, {})).get("email", "")
    try:
        subject = rights.subject_from(config, email)
        limiter.access_per_client.take(client_address(request, config.limits.trusted_proxy_hops))
        limiter.access_per_address.take((subject.email_key or "").encode().hex())
    except errors.ValidationFailed:
        return _page(request, "page_access_title", _email_form(request), status=422)
    except errors.RateLimited:
        return _page(request, "page_access_title", _p(request, "page_rate_limited"), status=429)
    await bounded(
        request,
        rights.request_access(request.app[POOL], config, subject, request.app[PEPPER], _language(request)),
    )
    request[LOG_INFO]["outcome"] = "access_link_requested"  # never whether the address was known
    return _page(request, "page_access_sent_title", _p(request, "page_access_sent_body"))


def _claim(request: web.Request, action: str) -> LinkClaim:
    """The verified token of `action`; the session's steps also spend the client's access budget."""
    config = request.app[CONFIG]
    minutes = config.mail.access_link_minutes if action == "access" else SESSION_MINUTES
    claim = verify_token(
        request.app[PEPPER],
        request.query.get("token", ""),
        action,
        datetime.now(UTC),
        minutes / _MINUTES_PER_DAY,
    )
    if action == "access-session":  # an export, objection or erasure request: not for free, not forever
        request.app[LIMITER].access_per_client.take(client_address(request, config.limits.trusted_proxy_hops))
    return claim


def _invalid(request: web.Request) -> web.Response:
    return _page(request, "page_view_title", _p(request, "page_link_invalid"), status=400)


async def view_page(request: web.Request) -> web.Response:
    """GET /v1/access/view: one button; opening the page changes nothing."""
    try:
        _claim(request, "access")
    except errors.InvalidLink:
        return _invalid(request)
    intro = _p(request, "page_view_intro", controller=_controller(request.app[CONFIG]))
    button = _button("/v1/access/view", text(_language(request), "page_view_title"), request.query["token"])
    return _page(request, "page_view_title", intro + button)


async def view(request: web.Request) -> web.Response:
    """POST /v1/access/view: use the link up, show what is held, offer the person's choices."""
    try:
        claim = _claim(request, "access")
        await bounded(request, rights.open_access_link(request.app[POOL], claim, request.app[PEPPER]))
    except errors.InvalidLink:
        return _invalid(request)
    document = await _export(request, claim)
    session = make_token(
        request.app[PEPPER],
        "access-session",
        claim.email_hash,
        datetime.now(UTC),
        SESSION_MINUTES / _MINUTES_PER_DAY,
    )
    return _page(request, "page_view_title", _render(request, document) + _choices(request, session))


async def _export(request: web.Request, claim: LinkClaim) -> dict[str, Any]:
    config, pool, pepper = request.app[CONFIG], request.app[POOL], request.app[PEPPER]
    subject = await bounded(request, rights.subject_by_hash(pool, config, claim.email_hash))
    if subject is None:  # erased since the link was mailed
        return {"contacts": [], "marketing_suppressed": False}
    return await bounded(request, rights.export(pool, subject, pepper, "self-service"))


def _render(request: web.Request, document: dict[str, Any]) -> str:
    language = _language(request)
    label = {
        k: text(language, f"page_field_{k}")
        for k in ("name", "email", "phone", "message", "received", "source")
    }
    parts = []
    for contact in document.get("contacts", []):
        rows = [(label[k], contact.get(k)) for k in ("name", "email", "phone")]
        for submission in contact.get("submissions", []):
            rows += [
                (label["received"], submission.get("received_at")),
                (label["source"], submission.get("source")),
                (label["message"], submission.get("message")),
            ]
        parts.append(
            "<dl>"
            + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in rows if v)
            + "</dl>"
        )
    if document.get("marketing_suppressed"):
        parts.append(_p(request, "page_marketing_suppressed"))
    return "".join(parts)


def _choices(request: web.Request, session: str) -> str:
    language = _language(request)
    return (
        _button("/v1/access/export", text(language, "page_download_json"), session)
        + _button("/v1/access/object", text(language, "page_object_button"), session)
        + _button("/v1/access/erase", text(language, "page_erase_button"), session)
    )


async def export_json(request: web.Request) -> web.Response:
    """POST /v1/access/export: the data page's JSON download (Art. 20)."""
    try:
        claim = _claim(request, "access-session")
    except errors.InvalidLink:
        return _invalid(request)
    document = await _export(request, claim)
    return web.Response(
        body=json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8"),
        content_type="application/json",
        headers=_HEADERS | {"Content-Disposition": 'attachment; filename="my-data.json"'},
    )


async def object_to_marketing(request: web.Request) -> web.Response:
    """POST /v1/access/object: a direct-marketing objection, kept even after erasure."""
    try:
        claim = _claim(request, "access-session")
    except errors.InvalidLink:
        return _invalid(request)
    pool, pepper = request.app[POOL], request.app[PEPPER]
    await bounded(request, rights.unsubscribe(pool, claim.email_hash, pepper, actor="self-service"))
    return _page(request, "page_view_title", _p(request, "page_objected"))


async def erase(request: web.Request) -> web.Response:
    """POST /v1/access/erase: a request on the one-month clock, or erasure at once ([mail] erasure)."""
    try:
        claim = _claim(request, "access-session")
    except errors.InvalidLink:
        return _invalid(request)
    config, pool, pepper = request.app[CONFIG], request.app[POOL], request.app[PEPPER]
    subject = await bounded(request, rights.subject_by_hash(pool, config, claim.email_hash))
    if subject is None or config.mail.erasure == "immediate":
        if subject is not None:
            await bounded(request, rights.erase(pool, subject, pepper, "self-service"))
        return _page(request, "page_view_title", _p(request, "page_erased"))
    # One request however often the button is pressed: the clock of the first one runs.
    due = await bounded(request, rights.request_once(pool, subject, "erasure", pepper, "self-service"))
    return _page(request, "page_view_title", _p(request, "page_erase_requested", due=due.date().isoformat()))


def add_routes(app: web.Application) -> None:
    """Register the self-service pages."""
    app.router.add_get("/v1/access", access_page)
    app.router.add_post("/v1/access", request_access)
    app.router.add_get("/v1/access/view", view_page)
    app.router.add_post("/v1/access/view", view)
    app.router.add_post("/v1/access/export", export_json)
    app.router.add_post("/v1/access/object", object_to_marketing)
    app.router.add_post("/v1/access/erase", erase)
