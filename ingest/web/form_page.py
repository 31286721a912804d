"""The example contact form of an html source, and the pages a browser sees after posting.

Plain HTML that works without JavaScript: labels tied to inputs, autocomplete
hints, the consent checkboxes with their exact wording, and the privacy notice.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time

from aiohttp import web

from ingest.config import Config, Source
from ingest.errors import IngestError, ValidationFailed
from ingest.web.intake import resolve_source

_STYLE = """
body{font-family:system-ui,sans-serif;line-height:1.5;margin:0;padding:2rem 1rem;color:#1b1b1b}
main{max-width:36rem;margin:auto}label{display:block;font-weight:600;margin-top:1rem}
input,textarea{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;
border:1px solid #767676;border-radius:4px}
input:focus,textarea:focus,button:focus{outline:3px solid #1a5fb4;outline-offset:1px}
.consent{display:flex;gap:.5rem;align-items:flex-start;margin-top:1rem}
.consent input{width:auto;margin-top:.35rem}.consent label{font-weight:400;margin:0}
.hint{color:#4d4d4d;font-size:.9rem}
.hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
button{margin-top:1.5rem;padding:.6rem 1.4rem;font:inherit;background:#1a5fb4;color:#fff;
border:0;border-radius:4px}
.errors{border-left:4px solid #c01c28;padding:.5rem 1rem;background:#fff0f0}
"""
# The pages' Content-Security-Policy allows this one inline style by its hash (not
# 'unsafe-inline'): change the style and the hash follows.
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode("utf-8")).digest()).decode("ascii")

_LABELS = {"name": "Name", "email": "E-mail", "phone": "Phone", "message": "Message"}
_ERRORS = {
    "malformed_body": "The form could not be read. Please try again.",
    "origin_not_allowed": "This form may only be sent from our website.",
    "payload_too_large": "The message is too long.",
    "unsupported_media_type": "The form was sent in a way we cannot read.",
    "rate_limited": "Too many messages from here just now. Please wait a moment and try again.",
    "body_timeout": "The form took too long to arrive. Please try again.",
}


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return web.Response(text=document, content_type="text/html", status=status)


def _input(source: Source, field: str, kind: str, autocomplete: str) -> str:
    name = html.escape(source.field_map.get(field, field))
    return (
        f'<label for="f-{field}">{_LABELS[field]}</label>'
        f'<input id="f-{field}" name="{name}" type="{kind}" autocomplete="{autocomplete}"'
        f"{' maxlength=200' if field == 'name' else ''}>"
    )


def render_form(config: Config, source: Source, action: str) -> str:
    """The form's HTML (a fragment a site owner can copy into their page)."""
    consents = "".join(
        f'<div class="consent"><input type="checkbox" id="c-{i}" name="{html.escape(form_field)}" value="on">'
        f'<label for="c-{i}">{html.escape(config.consents[consent_id].text)}</label></div>'
        for i, (form_field, consent_id) in enumerate(source.consent_fields.items())
    )
    message_name = html.escape(source.field_map.get("message", "message"))
    notice = (
        f'<a href="{html.escape(config.notice_url)}">privacy notice</a>'
        if config.notice_url
        else "privacy notice"
    )
    return (
        f'<form method="post" action="{html.escape(action)}" accept-charset="utf-8">'
        + _input(source, "name", "text", "name")
        + _input(source, "email", "email", "email")
        + _input(source, "phone", "tel", "tel")
        + '<p class="hint" id="contact-hint">'
        "Give an e-mail address or a phone number so we can reach you.</p>"
        + f'<label for="f-message">Message</label><textarea id="f-message" name="{message_name}" rows="6"'
        ' maxlength="5000"></textarea>'
        + consents
        + f'<div class="hp" aria-hidden="true"><label for="hp">Leave this field empty</label>'
        f'<input id="hp" name="{html.escape(source.honeypot_field)}" tabindex="-1" autocomplete="off"></div>'
        + f'<input type="hidden" name="_rendered_at" value="{int(time.time())}">'
        + f'<p class="hint">We use your details only to answer you and as our {notice} '
        f"(version {html.escape(config.notice_version)}) describes.</p>"
        + '<button type="submit">Send</button></form>'
    )


async def form_page(request: web.Request) -> web.Response:
    """GET /v1/forms/{source} on an html source: the example contact form."""
    from ingest.web.keys import CONFIG  # noqa: PLC0415 - keys imports the service layer

    source = resolve_source(request)
    if source.format != "html":
        raise web.HTTPMethodNotAllowed("GET", ["POST"])
    return _page("Contact us", render_form(request.app[CONFIG], source, request.path))


def thanks_page() -> web.Response:
    """What a browser sees after a successful post when the source has no success_url."""
    return _page("Thank you", "<p>Your message has arrived. We will be in touch soon.</p>", status=201)


def error_page(error: IngestError, back: str) -> web.Response:
    """What a browser sees after a refused post when the source has no error_url."""
    if isinstance(error, ValidationFailed):
        items = "".join(
            f"<li>{html.escape(_LABELS.get(field, field.replace('_', ' ').capitalize()))}: "
            f"{html.escape(' '.join(messages))}</li>"
            for field, messages in error.fields.items()
        )
        body = f'<div class="errors" role="alert"><p>Please check the form:</p><ul>{items}</ul></div>'
    else:
        text = _ERRORS.get(error.code, "Something went wrong. Please try again later.")
        body = f'<div class="errors" role="alert"><p>{html.escape(text)}</p></div>'
    return _page(
        "Your message was not sent",
        body + f'<p><a href="{html.escape(back)}">Back to the form</a></p>',
        status=error.status,
    )
