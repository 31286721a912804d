"""Intercom webhooks: conversations a user or lead starts (`conversation.user.created`).

Docs: "Signed Notifications"
https://developers.intercom.com/intercom-api-reference/v1.0/reference/signed-notifications ,
"Webhook models" https://developers.intercom.com/docs/references/1.0/webhooks/webhook-models and
the "Conversation source" model
https://developers.intercom.com/docs/references/2.16/rest-api/api.intercom.io/models/conversation_source .
X-Hub-Signature is `sha1=` and the hex HMAC-SHA1 of the raw body, keyed with the
app's client secret (the hub secret on legacy subscriptions); no time is signed.
The notification `id` (`notif_...`) is the delivery id.

A conversation's `source` is the message that started it: its author (a user or
lead: name and e-mail, often empty for anonymous leads) and its body. Before API
2.15 the body is HTML (`<p>Hi</p>`): it is reduced to plain text. Phone numbers
are not in the notification. `ping` (sent when the webhook is set up or tested)
and every other topic are acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from typing import Any, ClassVar

from ingest.adapters.base import (
    LARGE_DELIVERY_BYTES,
    BaseAdapter,
    Ignored,
    Item,
    parse_json_object,
    require,
    require_content_type,
    secret_matches,
)
from ingest.adapters.mapping import as_dict, delivery_id
from ingest.config import Source
from ingest.domain import Channel, InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature

_SIGNATURE = re.compile(r"^sha1=([0-9a-fA-F]{40})$")
# Authors that are the person who wrote in; admins, bots and teams speak for the business.
_CONTACT_TYPES = frozenset({"user", "lead", "contact"})
# Markup worth parsing: a tag, a comment or declaration, or a character reference.
_MARKUP = re.compile(r"<[A-Za-z/!?]|&(?:#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
# Elements that end a paragraph (a blank line) or a line; inline ones (a, b, span) end nothing.
_PARAGRAPHS = frozenset(
    {
        "p", "blockquote", "pre", "table", "ul", "ol", "hr", "section", "article", "header", "footer",
        "h1", "h2", "h3", "h4", "h5", "h6",
    }
)  # fmt: skip
_LINES = frozenset({"div", "li", "tr", "dt", "dd"})
_HIDDEN = frozenset({"script", "style", "head", "title", "template"})
_BLANK_LINES = re.compile(r"\n{3,}")
_SPACES = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]*>")
_LINE_SPACE = re.compile(r"[ \t\r\f\v]*\n[ \t\r\f\v]*")


class IntercomAdapter(BaseAdapter):
    """An Intercom workspace's user- and lead-initiated conversations."""

    name: ClassVar[str] = "intercom"
    channels: ClassVar[frozenset[Channel]] = frozenset({"chat"})
    max_body_bytes: ClassVar[int | None] = LARGE_DELIVERY_BYTES

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """Intercom notifications have fixed fields: no options, no field or consent mapping."""
        for option in source.options:
            raise ConfigError(f"{key('options')}.{option}: unknown option for format intercom")
        if source.field_map or source.consent_fields:
            raise ConfigError(f"{key('fields')}: format intercom has no form fields to map")

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Check X-Hub-Signature over the raw body, then read the one notification it carries."""
        require_content_type(self, request)
        verify(source, request)
        body = parse_json_object(request.body)
        notification_id = delivery_id(body.get("id"))
        topic = body.get("topic")
        if topic == "ping":
            return [Ignored("ping", notification_id)]
        if topic != "conversation.user.created":
            return [Ignored("unsupported_event", notification_id)]
        item = as_dict(as_dict(body.get("data")).get("item"))
        return [conversation_created(item, notification_id)]


def verify(source: Source, request: InboundRequest) -> None:
    """Constant-time check of `sha1=<hex HMAC-SHA1 of the raw body>` under every configured secret."""
    match = _SIGNATURE.match(request.headers.get("x-hub-signature", "").strip())
    if match is None:
        raise InvalidSignature
    require(
        secret_matches(
            source.secrets,
            lambda key: hmac.new(key, request.body, hashlib.sha1).hexdigest().encode("ascii"),
            match.group(1).lower().encode("ascii"),
        )
    )


def conversation_created(item: dict[str, Any], notification_id: str | None) -> Item:
    """The contact's name, e-mail and opening message from the conversation's source."""
    conversation_source = as_dict(item.get("source"))
    author = as_dict(conversation_source.get("author"))
    if author.get("type") not in _CONTACT_TYPES:
        return Ignored("not_from_the_contact", notification_id)
    fields: dict[str, object] = {}
    for key in ("name", "email"):
        value = author.get(key)
        if value is not None and value != "":
            fields[key] = value
    parts = [
        plain_text(text)
        for text in (conversation_source.get("subject"), conversation_source.get("body"))
        if isinstance(text, str)
    ]
    parts = [p for p in parts if p]
    if len(parts) == 2 and parts[0] == parts[1]:  # noqa: PLR2004 - subject and body
        parts = parts[1:]
    if parts:
        fields["message"] = "\n\n".join(parts)
    return RawSubmission(fields=fields, delivery_id=notification_id, optional_contact=True)


class _TextOnly(HTMLParser):
    """Collects the text of an HTML fragment, with line breaks where blocks and <br> put them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.hidden = 0  # inside <script>, <style>, ...
        self.pre = 0
        self.pending = 0  # newlines owed before the next text: 1 a line break, 2 a paragraph

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        if tag in _HIDDEN:
            self.hidden += 1
            return
        self._block(tag)
        if tag == "pre":
            self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        self._block(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
            return
        self._block(tag)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if not self.pre:
            data = _SPACES.sub(" ", data)  # in HTML a newline in the source is a space
        if not data.strip():
            if not self.pending and self.chunks:
                self.chunks.append(data)
            return
        if self.pending and self.chunks:
            self.chunks.append("\n" * self.pending)
        self.pending = 0
        self.chunks.append(data)

    def _block(self, tag: str) -> None:
        if tag == "br":
            self.pending = min(2, self.pending + 1)  # <br><br> is a blank line
        elif tag in _PARAGRAPHS:
            self.pending = 2
        elif tag in _LINES:
            self.pending = max(self.pending, 1)


def plain_text(text: str) -> str:
    """Message text without markup: tags stripped, entities decoded, blocks on their own lines.

    Text without any markup is returned as it is (trimmed), so "a < b" or "AT&T" survive.
    """
    if not _MARKUP.search(text):
        return text.strip()
    parser = _TextOnly()
    try:
        parser.feed(text)
        parser.close()
        result = "".join(parser.chunks)
    except AssertionError:
        # html.parser asserts on some malformed declarations ("<![%..."): strip tags crudely.
        result = _SPACES.sub(" ", html.unescape(_TAG.sub(" ", text)))
    result = _LINE_SPACE.sub("\n", result.replace("\xa0", " "))
    return _BLANK_LINES.sub("\n\n", result).strip()


ADAPTER = IntercomAdapter()
