"""The example contact form of an html source, and the pages a browser sees after posting.

Plain HTML that works without JavaScript: labels tied to inputs, autocomplete
hints, the consent checkboxes with their exact wording, the privacy notice, and
the signed fill-time stamp (ingest/adapters/html.py). A refused post's page
re-renders the form with what the person typed: nothing of it goes into a URL.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from ingest.adapters.html import ADAPTER as HTML_ADAPTER
from ingest.adapters.html import (
    RENDERED_AT_FIELD,
    from_own_page,
    make_stamp,
    read_form,
    stamp_issued_at,
    stamp_key,
)
from ingest.config import Config, Source
from ingest.domain import InboundRequest
from ingest.errors import IngestError, UnknownSource, ValidationFailed
from ingest.web.intake import SUBMITTED_FORM, resolve_source

log = structlog.get_logger("ingest.form_page")

_STYLE = """
body{font-family:system-ui,sans-serif;line-height:1.5;margin:0;padding:2rem 1rem;color:#1b1b1b}
main{max-width:36rem;margin:auto}label{display:block;font-weight:600;margin-top:1rem}
input,textarea{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;
border:1px solid #767676;border-radius:4px}
input:focus,textarea:focus,button:focus{outline:3px solid #1a5fb4;outline-offset:1px}
.qd-consent{display:flex;gap:.5rem;align-items:flex-start;margin-top:1rem}
.qd-consent input{width:auto;margin-top:.35rem}.qd-consent label{font-weight:400;margin:0}
.qd-hint{color:#4d4d4d;font-size:.9rem}
.qd-hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
button{margin-top:1.5rem;padding:.6rem 1.4rem;font:inherit;background:#1a5fb4;color:#fff;
border:0;border-radius:4px}
.qd-errors{border-left:4px solid #c01c28;padding:.5rem 1rem;background:#fff0f0}
"""
# The pages' Content-Security-Policy allows this one inline style by its hash (not
# 'unsafe-inline'): change the style and the hash follows.
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode("utf-8")).digest()).decode("ascii")

_LABELS = {"name": "Name", "email": "E-mail", "phone": "Phone", "message": "Message", "form": "Form"}
_ERRORS = {
    "malformed_body": "The form could not be read. Please try again.",
    "origin_not_allowed": "This form may only be sent from our website.",
    "payload_too_large": "The message is too long.",
    "unsupported_media_type": "The form was sent in a way we cannot read.",
    "rate_limited": "Too many messages from here just now. Please wait a moment and try again.",
    "body_timeout": "The form took too long to arrive. Please try again.",
}
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _page(title: str, body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return web.Response(text=document, content_type="text/html", status=status, headers=headers)


def form_action(config: Config, path: str) -> str:
    """Where the form posts: absolute under `public_url` (so a copied form still works), else `path`."""
    return f"{config.public_url.rstrip('/')}{path}" if config.public_url else path


def _input(
    source: Source, field: str, kind: str, autocomplete: str, values: Mapping[str, str], ids: str
) -> str:
    name = source.field_map.get(field, field)
    value = values.get(name, "")
    filled = f' value="{html.escape(value)}"' if value else ""
    return (
        f'<label for="{ids}f-{field}">{_LABELS[field]}</label>'
        f'<input id="{ids}f-{field}" name="{html.escape(name)}" type="{kind}" autocomplete="{autocomplete}"'
        f"{' maxlength=200' if field == 'name' else ''}"
        f"{filled}>"
    )


def render_form(
    config: Config,
    source: Source,
    action: str,
    stamp: str = "",
    values: Mapping[str, str] | None = None,
    *,
    embedded: bool = False,
) -> str:
    """The form's HTML: the service's own page, or (`embedded`) the snippet a site pastes.

    `values` (form field name -> text) fills the form in again; `embedded` hides the
    honeypot with the `hidden` attribute (no style needed) and leaves the stamp for the
    snippet's script to fetch.
    """
    values = values or {}
    # On a website, ids are the page's: prefixed so that they cannot clash with its own.
    ids = f"qd-{source.name}-" if embedded else ""
    consents = "".join(
        f'<div class="qd-consent"><input type="checkbox" id="{ids}c-{i}" name="{html.escape(form_field)}"'
        f' value="on"{" checked" if values.get(form_field) else ""}>'
        f'<label for="{ids}c-{i}">{html.escape(config.consents[consent_id].text)}</label></div>'
        for i, (form_field, consent_id) in enumerate(source.consent_fields.items())
    )
    message_name = source.field_map.get("message", "message")
    notice = "privacy notice"
    if config.notice_url:
        notice = f'<a href="{html.escape(config.notice_url)}">{notice}</a>'
    who = (
        f"{html.escape(config.controller)} uses your details only to answer you and as its {notice}"
        if config.controller
        else f"We use your details only to answer you and as our {notice}"
    )
    honeypot = (
        '<div class="qd-hp" hidden aria-hidden="true">'
        if embedded
        else '<div class="qd-hp" aria-hidden="true">'
    )
    return (
        f'<form method="post" action="{html.escape(action)}" accept-charset="utf-8" class="qd-form">'
        + _input(source, "name", "text", "name", values, ids)
        + _input(source, "email", "email", "email", values, ids)
        + _input(source, "phone", "tel", "tel", values, ids)
        + '<p class="qd-hint">Give an e-mail address or a phone number so we can reach you.</p>'
        + f'<label for="{ids}f-message">Message</label><textarea id="{ids}f-message"'
        f' name="{html.escape(message_name)}" rows="6" maxlength="5000">'
        + html.escape(values.get(message_name, ""))
        + "</textarea>"
        + consents
        + honeypot
        + f'<label for="{ids}hp">Leave this field empty</label>'
        f'<input id="{ids}hp" name="{html.escape(source.honeypot_field)}" tabindex="-1"'
        ' autocomplete="off"></div>'
        + f'<input type="hidden" name="{RENDERED_AT_FIELD}" value="{html.escape(stamp)}">'
        + f'<p class="qd-hint">{who} (version {html.escape(config.notice_version)}) describes.</p>'
        + '<button type="submit">Send</button></form>'
    )


def _html_source(request: web.Request) -> Source:
    source = resolve_source(request)
    if source.format != "html":
        # What the route serves on a non-html source (RFC 9110: Allow names them all).
        raise web.HTTPMethodNotAllowed(request.method, ["OPTIONS", "POST"])
    return source


async def form_page(request: web.Request) -> web.Response:
    """GET /v1/forms/{source} on an html source: the example contact form."""
    from ingest.web.keys import CONFIG, PEPPER  # noqa: PLC0415 - keys imports the service layer

    source = _html_source(request)
    config = request.app[CONFIG]
    stamp = make_stamp(stamp_key(request.app[PEPPER]), source.name)
    return _page("Contact us", render_form(config, source, form_action(config, request.path), stamp))


async def stamp(request: web.Request) -> web.Response:
    """GET /v1/forms/{source}/stamp: a fresh signed fill-time stamp for an embedded form."""
    from ingest.web.keys import CONFIG, LOG_INFO, PEPPER  # noqa: PLC0415 - keys imports the service layer

    source = request.app[CONFIG].sources.get(request.match_info["source"])
    if source is None or source.format != "html":
        raise UnknownSource
    request[LOG_INFO].update(source=source.name, channel=source.channel, format=source.format)
    headers = {"Cache-Control": "no-store"}
    origin = request.headers.get("Origin", "")
    if origin in source.allowed_origins:
        # Read by the snippet's script on the website: only the source's own origins.
        headers |= {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    fresh = make_stamp(stamp_key(request.app[PEPPER]), source.name)
    return web.json_response({"stamp": fresh}, headers=headers)


def stays_local(config: Config, inbound: InboundRequest) -> bool:
    """Without `public_url` (a local trial), a post from the service's own page is answered here.

    The example config's success_url is the real website: trying the example form on
    127.0.0.1 must land on this service's thank-you and error pages, not there.
    """
    return config.public_url is None and from_own_page(inbound)


def thanks_page(config: Config) -> web.Response:
    """What a browser sees after a successful post when the source has no success_url."""
    who = html.escape(config.controller) if config.controller else "We"
    return _page("Thank you", f"<p>Your message has arrived. {who} will be in touch soon.</p>", status=201)


def error_page(request: web.Request, source: Source, error: IngestError) -> web.Response:
    """What a browser sees after a refused post when the source has no error_url.

    Invalid fields: the form again, filled in with what was posted, with a stamp (the
    posted one if genuine, so the time already spent counts; else a fresh one).
    """
    from ingest.web.keys import CONFIG, PEPPER  # noqa: PLC0415 - keys imports the service layer

    title = "Your message was not sent"
    submitted = request.get(SUBMITTED_FORM)
    if isinstance(error, ValidationFailed):
        items = "".join(
            f"<li>{html.escape(_LABELS.get(field, field.replace('_', ' ').capitalize()))}: "
            f"{html.escape(' '.join(messages))}</li>"
            for field, messages in error.fields.items()
        )
        alert = f'<div class="qd-errors" role="alert"><p>Please check the form:</p><ul>{items}</ul></div>'
        values = _posted_values(submitted)
        if values is not None:
            config = request.app[CONFIG]
            key = stamp_key(request.app[PEPPER])
            posted = values.get(RENDERED_AT_FIELD)
            genuine = stamp_issued_at(key, source.name, posted, time.time()) is not None
            stamp = posted if genuine and posted else make_stamp(key, source.name)
            form = render_form(config, source, form_action(config, request.path), stamp, values)
            # The person's own words are on this page: not for any cache. The form on it
            # posts with its Origin (no-referrer would make that `null`, which is refused).
            headers = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin"}
            return _page(title, alert + form, status=error.status, headers=headers)
        body = alert
    else:
        text = _ERRORS.get(error.code, "Something went wrong. Please try again later.")
        body = f'<div class="qd-errors" role="alert"><p>{html.escape(text)}</p></div>'
    return _page(
        title,
        body + f'<p><a href="{html.escape(request.path)}">Back to the form</a></p>',
        status=error.status,
    )


def _posted_values(submitted: InboundRequest | None) -> dict[str, str] | None:
    if submitted is None:
        return None
    try:
        return read_form(HTML_ADAPTER, submitted)
    except IngestError:
        return None


def public_url_warning(config: Config) -> str | None:
    """Why a served configuration without `public_url` is probably a mistake (None if it is not)."""
    if config.public_url is not None:
        return None
    sites = sorted(
        origin
        for source in config.sources.values()
        if source.format == "html"
        for origin in source.allowed_origins
        if (urlsplit(origin).hostname or "") not in _LOCAL_HOSTS
    )
    if not sites:
        return None
    return (
        f"public_url is not set while html sources accept posts from {', '.join(sites)}: the example "
        "form posts to a relative URL, unsubscribe and confirm links print http://127.0.0.1:8080, and "
        "posts from the service's own pages stay on its built-in thank-you page"
    )


def add_routes(app: web.Application) -> None:
    """Register the example form and its stamp; warn once when public_url is missing."""
    from ingest.web.keys import CONFIG  # noqa: PLC0415 - keys imports the service layer

    app.router.add_get("/v1/{kind:forms}/{source}", form_page)
    app.router.add_get("/v1/forms/{source}/stamp", stamp)
    warning = public_url_warning(app[CONFIG])
    if warning is not None:
        log.warning("public_url_not_set", detail=warning)
