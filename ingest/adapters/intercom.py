"""Intercom webhooks: conversations a user or lead starts (`conversation.user.created`).

Docs: "Signed Notifications"
https://developers.intercom.com/intercom-api-reference/v1.0/reference/signed-notifications ,
"Webhook models" https://developers.intercom.com/docs/references/1.0/webhooks/webhook-models and
the "Conversation source" model
https://developers.intercom.com/docs/references/2.16/rest-api/api.intercom.io/models/conversation_source .
X-Hub-Signature is `sha1=` and the hex HMAC-SHA1 of the raw body, keyed with the
app's client secret (the hub secret on legacy subscriptions); no time is signed.
The notification `id` (`notif_...`) is the delivery id.

Notifications are shaped by the API version the app is set to (Developer Hub >
your app > Configure > Basic information), and both shapes Intercom still serves
are read:
- API 2.x: the conversation's `source` is the message that started it: its author
  (a user or lead: name and e-mail, often empty for anonymous leads) and its body.
- API 1.x (1.0-1.4): the opening message is `conversation_message` (its author has
  only a type and an id) and the person is `user` (a user or lead, with name and
  e-mail): "Webhook models", https://developers.intercom.com/docs/references/1.1/webhooks/webhook-models
  (item type Conversation), the 1.4 Conversation model, and zulip's fixture.
An item in neither shape is acknowledged as ignored `unsupported_payload_version`
(counted, and alerted on as a jump of the source's ignored share), never guessed
at. Before API 2.15 the body is HTML (`<p>Hi</p>`): it is reduced to plain text.
Phone numbers are not in the notification. `ping` (sent when the webhook is set
up or tested) and every other topic are acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import LARGE_DELIVERY_BYTES, BaseAdapter, Ignored, Item, require, secret_matches
from ingest.adapters.bodies import parse_json_object, require_content_type
from ingest.adapters.mapping import as_dict, content_id, delivery_id
from ingest.config import Source
from ingest.domain import InboundRequest, RawSubmission
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
# Raw text: their content is not markup and ends only at their own end tag.
_RAW_TEXT = frozenset({"script", "style"})
_BLANK_LINES = re.compile(r"\n{3,}")
_SPACES = re.compile(r"\s+")
_LINE_BLANKS = " \t\r\f\v"
# A start or end tag at a "<", quoted attribute values may hold ">". Possessive
# throughout: a tag that never closes fails in one pass over it, never backtracking.
_TAG = re.compile(r"""<(/?)([A-Za-z][^\t\n\f\r />]*+)((?:[^>"']++|"[^"]*+"|'[^']*+')*+)>""")
# Where markup may start; any other "<" is text ("I <3 you").
_MARKUP_START = re.compile(r"<[A-Za-z/!?]")
_RAW_TEXT_END = {name: re.compile(rf"</{name}[\t\n\f\r />]", re.IGNORECASE) for name in _RAW_TEXT}


class IntercomAdapter(BaseAdapter):
    """An Intercom workspace's user- and lead-initiated conversations."""

    name: ClassVar[str] = "intercom"
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
        notification_id = delivery_id(body.get("id")) or content_id(request.body)
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
    """The contact's name, e-mail and opening message, from an API 2.x or 1.x conversation."""
    if "source" in item:  # API 2.x
        conversation_source = as_dict(item.get("source"))
        author = person = as_dict(conversation_source.get("author"))
    elif isinstance(item.get("conversation_message"), dict):  # API 1.x
        conversation_source = item["conversation_message"]
        author, person = as_dict(conversation_source.get("author")), as_dict(item.get("user"))
        if person.get("type") not in _CONTACT_TYPES:
            return Ignored("not_from_the_contact", notification_id)
    else:
        return Ignored("unsupported_payload_version", notification_id)
    if author.get("type") not in _CONTACT_TYPES:
        return Ignored("not_from_the_contact", notification_id)
    fields: dict[str, object] = {}
    for key in ("name", "email"):
        value = person.get(key)
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


class _TextOnly:
    """Collects the text of an HTML fragment, with line breaks where blocks and <br> put them.

    A tokenizer of its own rather than html.parser: Python 3.11's HTMLParser is
    quadratic on unclosed comments, tags and declarations (fixed upstream in 2025).
    Every step here moves forward with str.find or an anchored possessive match,
    so the work is linear in the text; markup left open at the end is dropped, as
    a browser drops it.
    """

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.hidden = 0  # inside <script>, <style>, ...
        self.pre = 0
        self.pending = 0  # newlines owed before the next text: 1 a line break, 2 a paragraph

    def feed(self, text: str) -> None:
        """Read the whole fragment."""
        for kind, value in _tokens(text):
            if kind == "data":
                self.handle_data(html.unescape(value))
            elif kind == "start":
                self.handle_starttag(value)
            elif kind == "startend":
                self.handle_startendtag(value)
            else:
                self.handle_endtag(value)

    def handle_starttag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
            return
        self._block(tag)
        if tag == "pre":
            self.pre += 1

    def handle_startendtag(self, tag: str) -> None:
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


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """("data", text) and ("start" | "startend" | "end", tag name) for an HTML fragment, in order.

    Comments, declarations and processing instructions yield nothing; markup left
    open swallows the rest of the text, as in a browser.
    """
    at = scan = 0  # the text not yet yielded starts at `at`; markup is looked for from `scan`
    while (found := _MARKUP_START.search(text, scan)) is not None:
        start = found.start()
        end, token = _markup(text, start)
        if start > at:
            yield "data", text[at:start]
        if end < 0:
            return
        if token is not None:
            yield token
            if token[0] == "start" and token[1] in _RAW_TEXT:
                close_tag = _RAW_TEXT_END[token[1]].search(text, end)
                if close_tag is None:
                    return
                end = close_tag.start()  # the script's text is skipped, its end tag read next
        at = scan = end
    if at < len(text):
        yield "data", text[at:]


def _markup(text: str, start: int) -> tuple[int, tuple[str, str] | None]:
    """Where the markup at `start` ends (-1: never) and the tag it is, if it is one."""
    first, second = text[start + 1 : start + 2], text[start + 2 : start + 3]
    if text.startswith("<!--", start):
        close = text.find("-->", start + 2)  # "<!-->" is an empty comment, as in browsers
        return (close + 3 if close >= 0 else -1), None
    if _letter(first) or (first == "/" and _letter(second)):
        match = _TAG.match(text, start)
        if match is None:
            return -1, None
        kind = "end" if match.group(1) else "startend" if match.group(3).endswith("/") else "start"
        return match.end(), (kind, match.group(2).lower())
    close = text.find(">", start)  # "<!DOCTYPE", "<?xml", "</ x>": bogus comments
    return (close + 1 if close >= 0 else -1), None


def _letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def plain_text(text: str) -> str:
    """Message text without markup: tags stripped, entities decoded, blocks on their own lines.

    Text without any markup is returned as it is (trimmed), so "a < b" or "AT&T" survive.
    """
    if not _MARKUP.search(text):
        return text.strip()
    parser = _TextOnly()
    parser.feed(text)
    result = "".join(parser.chunks).replace("\xa0", " ")
    # Blanks around each line break go (split and strip, not a regex: one pass).
    result = "\n".join(line.strip(_LINE_BLANKS) for line in result.split("\n"))
    return _BLANK_LINES.sub("\n\n", result).strip()


ADAPTER = IntercomAdapter()
