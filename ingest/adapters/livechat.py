"""LiveChat (text.com) webhooks v3.x: `incoming_chat` and `incoming_event`, authenticated by `secret_key`.

Docs: "Webhooks" (v3.6) https://platform.text.com/docs/management/webhooks/ and the Agent Chat API
"Data structures" https://platform.text.com/docs/messaging/agent-chat-api/data-structures .
LiveChat signs nothing: the `secret_key` given at registration comes back at the top of
the JSON body, so the body is parsed (strictly) before that key is compared.

Identity arrives in pieces: `incoming_chat` carries the customer user (name, e-mail,
phone) and the thread's first events (the pre-chat `filled_form`, the first message);
later `incoming_event`s carry more messages or forms. Each becomes a piece keyed by
the chat id. Only the customer's own words and answers are read: agents' messages,
system messages and agent-only events never are. `incoming_event` carries no user
list, so its author counts as the customer only when the id has the shape LiveChat
gives customers (a UUID; agents are their e-mail logins, bots 32 hex digits). Register
that webhook with `filters.author_type = "customer"` as well.

Pre-chat form fields are mapped like a form's (`fields`, `consent_fields`, else by
type `name`/`email` and by label); a form answer never becomes the message unless
`fields.message` names it.
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
    delivery_id,
    pick_consents,
    pick_fields,
)
from ingest.config import Source
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature, MalformedBody

TYPE_DEFAULTS = {"name": "name", "email": "email"}
_CUSTOMER_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# What a widget shows for a customer who gave no name; never a person's name.
_PLACEHOLDER_NAMES = frozenset({"customer", "visitor", "guest", "client", "anonymous"})


class LiveChatAdapter(BaseAdapter):
    """A LiveChat license's chats: the customer's details, pre-chat answers and first message."""

    name: ClassVar[str] = "livechat"
    # "Building webhook apps": respond with HTTP 200, otherwise LiveChat retries.
    success_status: ClassVar[int | None] = 200
    max_body_bytes: ClassVar[int | None] = LARGE_DELIVERY_BYTES

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """Pre-chat field mapping must name fields; `organization_id` must be text."""
        check_mapping(source, key, allowed_options=("organization_id",))
        organization = source.options.get("organization_id")
        if organization is not None and (not isinstance(organization, str) or not organization.strip()):
            raise ConfigError(f"{key('options')}.organization_id: the LiveChat organization id (text)")

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Check the body's secret_key, then read one chat or event as a piece of the chat."""
        require_content_type(self, request)
        body = parse_json_object(request.body)
        verify(source, body)
        action = body.get("action")
        payload = as_dict(body.get("payload"))
        if action == "incoming_chat":
            return [incoming_chat(source, payload)]
        if action == "incoming_event":
            return [incoming_event(source, payload)]
        return [Ignored("unsupported_event")]


def verify(source: Source, body: dict[str, Any]) -> None:
    """Constant-time check of the body's secret_key against every configured secret."""
    given = body.get("secret_key")
    if not isinstance(given, str) or not given:
        raise InvalidSignature
    require(secret_matches(source.secrets, lambda key: key, text_bytes(given)))
    expected = source.options.get("organization_id")
    if expected is not None:
        # v3.3+ sends organization_id; older versions an integer license_id.
        organization = body.get("organization_id", body.get("license_id"))
        if isinstance(organization, int) and not isinstance(organization, bool):
            organization = str(organization)
        require(organization == expected)


def incoming_chat(source: Source, payload: dict[str, Any]) -> Item:
    """The customer's details, pre-chat answers and first message of a new thread."""
    chat = as_dict(payload.get("chat"))
    chat_id = delivery_id(chat.get("id"))
    if chat_id is None:
        raise MalformedBody
    thread = as_dict(chat.get("thread"))
    thread_id = delivery_id(thread.get("id")) or ""
    event_id = delivery_id(f"incoming_chat:{chat_id}:{thread_id}")
    customer = next(
        (u for u in as_list(chat.get("users")) if isinstance(u, dict) and u.get("type") == "customer"), None
    )
    if customer is None:
        return Ignored("no_customer", event_id)
    customer_id = as_str(customer.get("id"))
    fields: dict[str, object] = {}
    for canonical, key in (("name", "name"), ("email", "email"), ("phone", "phone_number")):
        value = customer.get(key)
        if value is not None and value != "":
            fields[canonical] = value
    _drop_placeholder_name(fields)
    consents: dict[str, object] = {}
    message: object = None
    for event in as_list(thread.get("events")):
        if not _by_customer(event, customer_id):
            continue
        if event.get("type") == "filled_form":
            form_fields, form_consents = read_form(source, event)
            fields.update(form_fields)  # what the person typed beats the stored profile
            consents.update(form_consents)
        elif event.get("type") == "message" and message is None and _has_text(event.get("text")):
            message = event["text"]
    if message is not None:
        fields["message"] = message
    return _piece(fields, consents, event_id, chat_id)


def incoming_event(source: Source, payload: dict[str, Any]) -> Item:
    """A later customer message or form in a chat; anything else is ignored."""
    event = as_dict(payload.get("event"))
    chat_id = delivery_id(payload.get("chat_id"))
    raw_event_id = delivery_id(event.get("id"))
    if chat_id is None or raw_event_id is None:
        raise MalformedBody
    event_id = delivery_id(f"incoming_event:{raw_event_id}")
    kind = event.get("type")
    if kind not in ("message", "filled_form"):
        return Ignored("unsupported_event_type", event_id)
    author = as_str(event.get("author_id"))
    if author is None or not _CUSTOMER_ID.match(author) or not _by_customer(event, author):
        return Ignored("not_from_the_customer", event_id)
    if kind == "message":
        text = event.get("text")
        if not _has_text(text):
            return Ignored("no_text", event_id)
        return _piece({"message": text}, {}, event_id, chat_id)
    fields, consents = read_form(source, event)
    return _piece(fields, consents, event_id, chat_id)


def read_form(source: Source, event: dict[str, Any]) -> tuple[dict[str, object], dict[str, object]]:
    """The canonical fields and consents of a filled_form event."""
    answers = read_answers(as_list(event.get("fields")))
    fields = pick_fields(answers, source, TYPE_DEFAULTS)
    if "message" not in source.field_map:
        # A pre-chat question is not the visitor's first message unless the config says so.
        fields.pop("message", None)
    _drop_placeholder_name(fields)
    consents: dict[str, object] = dict(pick_consents(answers, source)) if source.consent_fields else {}
    return fields, consents


def read_answers(fields: list[Any]) -> list[Answer]:
    """One answer per form field: text answers as text, chosen options by their labels."""
    answers = []
    for field in fields:
        if not isinstance(field, dict):
            continue
        identifiers = tuple(x for x in (as_str(field.get("id")), as_str(field.get("label"))) if x)
        if not identifiers:
            continue
        answers.append(Answer(identifiers=identifiers, type=as_str(field.get("type")), value=_value(field)))
    return answers


def _value(field: dict[str, Any]) -> object:
    """A string (or a `checkbox_for_email` boolean) as is; {id, label} options as chosen labels."""
    answer = field.get("answer")
    if isinstance(answer, str | int | float):  # bool too: the newsletter box answers true/false
        return answer
    chosen = as_list(field.get("answers")) if "answers" in field else [answer]
    labels = [as_str(as_dict(option).get("label")) for option in chosen]
    texts = [label for label in labels if label]
    return texts or None


def _by_customer(event: object, customer_id: str | None) -> bool:
    """An event the customer wrote, visible to them (not an agents-only note)."""
    return (
        isinstance(event, dict)
        and customer_id is not None
        and event.get("author_id") == customer_id
        # `visibility` since API v3.3's samples; `recipients` in the older data structures.
        and event.get("visibility", "all") != "agents"
        and event.get("recipients", "all") != "agents"
    )


def _has_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _drop_placeholder_name(fields: dict[str, object]) -> None:
    name = fields.get("name")
    if isinstance(name, str) and name.strip().casefold() in _PLACEHOLDER_NAMES:
        del fields["name"]


def _piece(
    fields: dict[str, object], consents: dict[str, object], event_id: str | None, chat_id: str
) -> RawSubmission:
    return RawSubmission(
        fields=fields,
        consents=consents,
        delivery_id=event_id,
        optional_contact=True,
        session_key=chat_id,
    )


ADAPTER = LiveChatAdapter()
