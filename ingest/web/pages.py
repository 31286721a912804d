"""The HTML the service renders: the example contact form and the page around it.

The form is also the snippet a site pastes (ingest/snippet.py). Pure: no request, no
application state.

Plain HTML that works without JavaScript: labels tied to inputs, autocomplete
hints, the consent checkboxes with their exact wording, the privacy notice, and
the signed fill-time stamp (ingest/adapters/html.py).
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping

from aiohttp import web

from ingest.adapters.html import RENDERED_AT_FIELD
from ingest.config import Config, Source

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

LABELS = {"name": "Name", "email": "E-mail", "phone": "Phone", "message": "Message", "form": "Form"}


def page(title: str, body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A whole page around `body` (HTML), with the one inline style the CSP allows."""
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
        f'<label for="{ids}f-{field}">{LABELS[field]}</label>'
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
