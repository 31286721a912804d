"""Crisp web hooks (V1): the visitor's messages and the e-mail, phone and nickname they set.

Docs: "Web Hooks Reference (V1)" https://docs.crisp.chat/references/web-hooks/v1/ ,
"Website Hooks" https://docs.crisp.chat/guides/web-hooks/website-hooks and
"Plugin Hooks" https://docs.crisp.chat/guides/web-hooks/plugin-hooks .
Two kinds of hook, chosen per source with `options.hook`:
- "website" (default): not signed; the endpoint URL carries a secret query
  parameter (`?key=...`, the docs' example; `options.key_parameter` renames it).
- "plugin": X-Crisp-Signature is the hex HMAC-SHA256 of
  "[<X-Crisp-Request-Timestamp>;<body>]". Crisp's libraries sign the body as
  `JSON.stringify` writes it, so the raw bytes are tried first, then the compact
  re-serialisation. The timestamp must be within 24 hours of our clock (retries);
  its unit is not documented, so 10-11 digits read as seconds, 12-14 as milliseconds.
  A plugin receives the events of every website that installed it:
  `options.website_ids` lists ours, and other websites' events are ignored (2xx).

Identity arrives in pieces keyed by `data.session_id`: `message:send` from the
user (text only; operators' messages are not the visitor's words),
`session:set_email`, `session:set_phone`, `session:set_nickname`. The nicknames
Crisp makes up for anonymous visitors (`visitor493603`) are not names.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import BaseAdapter, Ignored, Item, require, secret_matches
from ingest.adapters.bodies import parse_json_object, require_content_type, text_bytes
from ingest.adapters.mapping import as_dict, as_str, compact_json, delivery_id
from ingest.config import Source
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature, MalformedBody

# Crisp documents the timestamp as when the hook was emitted, and retries failed hooks:
# a retry may carry the first attempt's timestamp. Replays inside the window are
# de-duplicated by the event's delivery id, so the window can cover the retries.
TOLERANCE_SECONDS = 24 * 60 * 60
HOOKS = ("website", "plugin")
_OPTIONS = ("hook", "key_parameter", "website_ids")
_TIMESTAMP = re.compile(r"^[0-9]{10,14}$")
_SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")
_PARAMETER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PLACEHOLDER_NAME = re.compile(r"^visitor[0-9]+$", re.IGNORECASE)
_SESSION_FIELDS = {"session:set_email": "email", "session:set_phone": "phone", "session:set_nickname": "name"}
_SESSION_KEYS = {"email": "email", "phone": "phone", "name": "nickname"}


class CrispAdapter(BaseAdapter):
    """A Crisp website's chats, through website hooks or a plugin's signed hooks."""

    name: ClassVar[str] = "crisp"

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """`options.hook` is website or plugin; `key_parameter` only names a website hook's parameter."""
        for option in source.options:
            if option not in _OPTIONS:
                raise ConfigError(f"{key('options')}.{option}: unknown option for format crisp")
        hook = source.options.get("hook", "website")
        if hook not in HOOKS:
            raise ConfigError(f"{key('options')}.hook: website or plugin")
        parameter = source.options.get("key_parameter")
        if parameter is not None:
            if hook != "website":
                raise ConfigError(f"{key('options')}.key_parameter: only for website hooks")
            if not isinstance(parameter, str) or not _PARAMETER.match(parameter):
                raise ConfigError(f"{key('options')}.key_parameter: a query parameter name")
        websites = source.options.get("website_ids")
        if websites is not None and not (
            isinstance(websites, list) and websites and all(isinstance(w, str) and w for w in websites)
        ):
            raise ConfigError(f"{key('options')}.website_ids: a list of Crisp website ids")
        if source.field_map or source.consent_fields:
            raise ConfigError(f"{key('fields')}: format crisp has no form fields to map")

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Authenticate the hook, then read one event as a piece of the visitor's session."""
        require_content_type(self, request)
        if source.options.get("hook", "website") == "plugin":
            body = verify_plugin(source, request)
        else:
            verify_website(source, request)
            body = parse_json_object(request.body)
        websites = source.options.get("website_ids")
        if websites is not None and body.get("website_id") not in websites:
            return [Ignored("other_website")]
        return [read_event(body)]


def verify_website(source: Source, request: InboundRequest) -> None:
    """Constant-time check of the secret query parameter against every configured secret."""
    given = request.query.get(source.options.get("key_parameter", "key"), "")
    require(bool(given))
    require(secret_matches(source.secrets, lambda key: key, text_bytes(given)))


def verify_plugin(source: Source, request: InboundRequest) -> dict[str, Any]:
    """Check X-Crisp-Signature over "[timestamp;body]" and the 5-minute window; return the body."""
    timestamp = request.headers.get("x-crisp-request-timestamp", "").strip()
    signature = request.headers.get("x-crisp-signature", "").strip()
    require(bool(_TIMESTAMP.match(timestamp)) and bool(_SIGNATURE.match(signature)))
    seconds = int(timestamp) / (1 if len(timestamp) <= 11 else 1000)  # noqa: PLR2004 - s vs ms by size
    require(abs(request.received_at.timestamp() - seconds) <= TOLERANCE_SECONDS)
    given = signature.lower().encode("ascii")
    prefix = b"[" + timestamp.encode("ascii") + b";"
    if _signed(source, prefix + request.body + b"]", given):
        return parse_json_object(request.body)
    try:
        payload = parse_json_object(request.body)
    except MalformedBody:
        raise InvalidSignature from None
    compact = compact_json(payload)
    require(compact != request.body and _signed(source, prefix + compact + b"]", given))
    return payload


def _signed(source: Source, message: bytes, given: bytes) -> bool:
    return secret_matches(
        source.secrets, lambda key: hmac.new(key, message, hashlib.sha256).hexdigest().encode("ascii"), given
    )


def read_event(body: dict[str, Any]) -> Item:
    """One event: a visitor's text message or a contact detail they set; anything else is ignored."""
    event = as_str(body.get("event"))
    data = as_dict(body.get("data"))
    session = delivery_id(data.get("session_id"))
    event_id = _event_id(session, event, body, data)
    if event != "message:send" and event not in _SESSION_FIELDS:
        return Ignored("unsupported_event", event_id)
    if session is None:
        raise MalformedBody
    if event == "message:send":
        return _message(data, event_id, session)
    canonical = _SESSION_FIELDS[event]
    value = data.get(_SESSION_KEYS[canonical])
    if canonical == "name" and not _is_name(value):
        return Ignored("no_name", event_id)
    if value is None or value == "":
        return Ignored("nothing_set", event_id)
    return _piece({canonical: value}, event_id, session)


def _message(data: dict[str, Any], event_id: str | None, session: str) -> Item:
    """The visitor's own text (with the nickname they chose); operators' messages are not theirs."""
    if data.get("from") != "user":
        return Ignored("operator_message", event_id)
    content = data.get("content")
    if data.get("type") != "text" or not isinstance(content, str) or not content.strip():
        return Ignored("not_a_text_message", event_id)
    fields: dict[str, object] = {"message": content}
    nickname = as_dict(data.get("user")).get("nickname")
    if _is_name(nickname):
        fields["name"] = nickname
    return _piece(fields, event_id, session)


def _event_id(
    session: str | None, event: str | None, body: dict[str, Any], data: dict[str, Any]
) -> str | None:
    """Session + event + when; a message also by its fingerprint (two messages in one millisecond)."""
    when = delivery_id(body.get("timestamp")) or delivery_id(data.get("timestamp"))
    if session is None or event is None or when is None:
        return None
    parts = [session, event, when]
    fingerprint = delivery_id(data.get("fingerprint"))
    if event == "message:send" and fingerprint is not None:
        parts.append(fingerprint)
    return delivery_id(":".join(parts))


def _is_name(value: object) -> bool:
    """A nickname a person chose: text, and not one Crisp generated (`visitor493603`)."""
    return isinstance(value, str) and bool(value.strip()) and not _PLACEHOLDER_NAME.match(value.strip())


def _piece(fields: dict[str, object], event_id: str | None, session: str) -> RawSubmission:
    return RawSubmission(fields=fields, delivery_id=event_id, optional_contact=True, session_key=session)


ADAPTER = CrispAdapter()
