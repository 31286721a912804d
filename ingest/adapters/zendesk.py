"""Zendesk Sunshine Conversations (Conversations API) webhooks v2: users' conversations and messages.

Docs: the Conversations API reference https://developer.zendesk.com/api-reference/conversations/
(Webhooks: `conversation:create`, `conversation:message`; the spec is
`zendesk/sunshine-conversations-api-spec`) and "Receiving Messages"
https://docs.smooch.io/guide/receiving-messages/ . Nothing is signed: every
delivery carries the webhook's `secret` in the X-API-Key header, compared in
constant time. One POST carries several `events[]`; each is one item whose
delivery id is its `id` ("may be used to ensure that an event is not processed
twice"), so a redelivered batch is answered per event.

Identity arrives in pieces, keyed by conversation and user: the user's profile
(`givenName`, `surname`, `email`; only with the webhook's `includeFullUser`
option) or an e-mail identity, the name the channel shows (never the generated
"Web User <id>"), and the first text the user wrote. Pre-chat form responses
(`formResponse`) are mapped like a form's (`fields`, `consent_fields`, else the
`email` field and labels); a form answer is never the message unless
`fields.message` names it. Messages from the business (agents, bots, our own
replies) are never read. `conversation:create` for a conversation "created
because a message was sent" is skipped: that message's event carries the same
user, and reading it first would commit the contact before the message arrived.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import LARGE_DELIVERY_BYTES, BaseAdapter, Ignored, Item, require, secret_matches
from ingest.adapters.bodies import parse_json_object, require_content_type, text_bytes
from ingest.adapters.mapping import (
    Answer,
    as_dict,
    as_list,
    as_str,
    check_mapping,
    compact_json,
    content_id,
    delivery_id,
    pick_consents,
    pick_fields,
)
from ingest.config import Source
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import MalformedBody, PayloadTooLarge

TYPE_DEFAULTS = {"email": "email"}
_PLACEHOLDER_NAME = re.compile(r"^Web User [0-9a-fA-F]+$")
_EMAIL_IDENTITIES = frozenset({"email"})
# The identity type strings for phone numbers are not documented; these are the plausible spellings.
_PHONE_IDENTITIES = frozenset({"phone", "phone_number", "phoneNumber", "sms"})


# Events read from one delivery. Each event is a database transaction later, so a
# signed but hostile batch of thousands would hold a worker; Sunshine Conversations
# batches a few events at a time, far below this.
MAX_EVENTS = 100


class ZendeskAdapter(BaseAdapter):
    """A Sunshine Conversations app's end users: profile, pre-chat answers and first message."""

    name: ClassVar[str] = "zendesk"
    max_body_bytes: ClassVar[int | None] = LARGE_DELIVERY_BYTES

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """Pre-chat form mapping must name fields; there are no options."""
        check_mapping(source, key)

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Check X-API-Key, then read every event of the batch as one item each."""
        require_content_type(self, request)
        given = request.headers.get("x-api-key", "")
        require(bool(given))
        require(secret_matches(source.secrets, lambda key: key, text_bytes(given)))
        body = parse_json_object(request.body)
        events = body.get("events")
        if "trigger" in body and "events" not in body:
            # A webhook created as version v1 (legacy Smooch): answered 2xx so it is not
            # retried for ever; its integration must be re-created as v2 (README).
            return [Ignored("unsupported_webhook_version", delivery_id(body.get("trigger")))]
        if not isinstance(events, list):
            raise MalformedBody
        if not events:
            return [Ignored("no_events")]
        if len(events) > MAX_EVENTS:
            raise PayloadTooLarge
        return [read_event(source, event) for event in events]


def read_event(source: Source, event: object) -> Item:
    """One event: a user's piece of a conversation, or ignored."""
    event = as_dict(event)
    # An event without a usable id is still one delivery: identified by its signed content.
    event_id = delivery_id(event.get("id")) or (content_id(compact_json(event)) if event else None)
    kind = event.get("type")
    payload = as_dict(event.get("payload"))
    if kind == "conversation:create":
        return conversation_create(payload, event_id)
    if kind == "conversation:message":
        return conversation_message(source, payload, event_id)
    return Ignored("unsupported_event", event_id)


def conversation_create(payload: dict[str, Any], event_id: str | None) -> Item:
    """The user of a new personal conversation (pre-chat capture, start conversation, ...)."""
    if payload.get("creationReason") == "message":
        return Ignored("message_follows", event_id)
    user = as_dict(payload.get("user"))
    fields = _user_fields(user, display_name=None)
    return _piece(fields, {}, event_id, _session(payload, user.get("id")))


def conversation_message(source: Source, payload: dict[str, Any], event_id: str | None) -> Item:
    """A user's message: their profile, and the text or pre-chat answers they sent."""
    message = as_dict(payload.get("message"))
    author = as_dict(message.get("author"))
    if author.get("type") != "user":
        return Ignored("business_message", event_id)
    user = as_dict(author.get("user"))
    fields = _user_fields(user, display_name=author.get("displayName"))
    consents: dict[str, object] = {}
    content = as_dict(message.get("content"))
    if content.get("type") == "text":
        text = content.get("text")
        if isinstance(text, str) and text.strip():
            fields["message"] = text
    elif content.get("type") == "formResponse":
        form_fields, consents = read_form(source, content)
        if {"first_name", "last_name", "name"} & form_fields.keys():
            for key in ("name", "first_name", "last_name"):
                fields.pop(key, None)  # what the person typed beats the profile's name
        fields.update(form_fields)
    user_id = author.get("userId", user.get("id"))
    return _piece(fields, consents, event_id, _session(payload, user_id))


def read_form(source: Source, content: dict[str, Any]) -> tuple[dict[str, object], dict[str, object]]:
    """The canonical fields and consents of a formResponse message."""
    answers = []
    for field in as_list(content.get("fields")):
        if not isinstance(field, dict):
            continue
        identifiers = tuple(x for x in (as_str(field.get("name")), as_str(field.get("label"))) if x)
        if identifiers:
            answers.append(
                Answer(identifiers=identifiers, type=as_str(field.get("type")), value=_value(field))
            )
    fields = pick_fields(answers, source, TYPE_DEFAULTS)
    if "message" not in source.field_map:
        # A pre-chat question is not the visitor's first message unless the config says so.
        fields.pop("message", None)
    if _is_placeholder(fields.get("name")):
        del fields["name"]
    consents: dict[str, object] = dict(pick_consents(answers, source)) if source.consent_fields else {}
    return fields, consents


def _value(field: dict[str, Any]) -> object:
    """A text or e-mail answer as is; a select answer as the labels of the chosen options."""
    kind = field.get("type")
    if kind in ("text", "email"):
        return field.get(kind)
    if kind == "select":
        labels = [as_str(as_dict(option).get("label")) for option in as_list(field.get("select"))]
        return [label for label in labels if label] or None
    return None


def _user_fields(user: dict[str, Any], display_name: object) -> dict[str, object]:
    """Name, e-mail and phone from a user's profile and identities; the display name as a fallback."""
    profile = as_dict(user.get("profile"))
    fields: dict[str, object] = {}
    for canonical, key in (("first_name", "givenName"), ("last_name", "surname"), ("email", "email")):
        value = profile.get(key)
        if value is not None and value != "":
            fields[canonical] = value
    has_name = "first_name" in fields or "last_name" in fields
    named = isinstance(display_name, str) and bool(display_name.strip()) and not _is_placeholder(display_name)
    if named and not has_name:
        fields["name"] = display_name
    for item in as_list(user.get("identities")):
        identity = as_dict(item)
        kind, value = identity.get("type"), identity.get("value")
        if value is None or value == "":
            continue
        if kind in _EMAIL_IDENTITIES:
            fields.setdefault("email", value)
        elif kind in _PHONE_IDENTITIES:
            fields.setdefault("phone", value)
    return fields


def _is_placeholder(name: object) -> bool:
    """The name Sunshine Conversations makes up for an anonymous Web Messenger user."""
    return isinstance(name, str) and bool(_PLACEHOLDER_NAME.match(name.strip()))


def _session(payload: dict[str, Any], user_id: object) -> str | None:
    """The conversation and user an event belongs to (a group conversation has several users)."""
    conversation = delivery_id(as_dict(payload.get("conversation")).get("id"))
    user = delivery_id(user_id)
    if conversation is None:
        return None
    return (delivery_id(f"{conversation}:{user}") if user is not None else None) or conversation


def _piece(
    fields: dict[str, object], consents: dict[str, object], event_id: str | None, session: str | None
) -> Item:
    if not fields and not consents:
        return Ignored("no_details", event_id)
    return RawSubmission(
        fields=fields, consents=consents, delivery_id=event_id, optional_contact=True, session_key=session
    )


ADAPTER = ZendeskAdapter()
