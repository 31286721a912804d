"""An html source's browser side: its example form, fill-time stamp and after-post pages.

The pages a browser sees after posting (rendered by ingest/web/pages.py). A refused post's
page re-renders the form with what the person typed: nothing of it goes into a URL.
"""

from __future__ import annotations

import html
import time
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
from ingest.web.inputs import resolve_source
from ingest.web.keys import CONFIG, LOG_INFO, PEPPER, SUBMITTED_FORM
from ingest.web.pages import LABELS, form_action, page, render_form

log = structlog.get_logger("ingest.form_page")

_ERRORS = {
    "malformed_body": "The form could not be read. Please try again.",
    "origin_not_allowed": "This form may only be sent from our website.",
    "payload_too_large": "The message is too long.",
    "unsupported_media_type": "The form was sent in a way we cannot read.",
    "rate_limited": "Too many messages from here just now. Please wait a moment and try again.",
    "body_timeout": "The form took too long to arrive. Please try again.",
}
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _html_source(request: web.Request) -> Source:
    source = resolve_source(request)
    if source.format != "html":
        # What the route serves on a non-html source (RFC 9110: Allow names them all).
        raise web.HTTPMethodNotAllowed(request.method, ["OPTIONS", "POST"])
    return source


async def form_page(request: web.Request) -> web.Response:
    """GET /v1/forms/{source} on an html source: the example contact form."""
    source = _html_source(request)
    config = request.app[CONFIG]
    stamp = make_stamp(stamp_key(request.app[PEPPER]), source.name)
    return page("Contact us", render_form(config, source, form_action(config, request.path), stamp))


async def stamp(request: web.Request) -> web.Response:
    """GET /v1/forms/{source}/stamp: a fresh signed fill-time stamp for an embedded form."""
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
    return page("Thank you", f"<p>Your message has arrived. {who} will be in touch soon.</p>", status=201)


def error_page(request: web.Request, source: Source, error: IngestError) -> web.Response:
    """What a browser sees after a refused post when the source has no error_url.

    Invalid fields: the form again, filled in with what was posted, with a stamp (the
    posted one if genuine, so the time already spent counts; else a fresh one).
    """
    title = "Your message was not sent"
    submitted = request.get(SUBMITTED_FORM)
    if isinstance(error, ValidationFailed):
        items = "".join(
            f"<li>{html.escape(LABELS.get(field, field.replace('_', ' ').capitalize()))}: "
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
            return page(title, alert + form, status=error.status, headers=headers)
        body = alert
    else:
        text = _ERRORS.get(error.code, "Something went wrong. Please try again later.")
        body = f'<div class="qd-errors" role="alert"><p>{html.escape(text)}</p></div>'
    return page(
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
    app.router.add_get("/v1/{kind:forms}/{source}", form_page)
    app.router.add_get("/v1/forms/{source}/stamp", stamp)
    warning = public_url_warning(app[CONFIG])
    if warning is not None:
        log.warning("public_url_not_set", detail=warning)
