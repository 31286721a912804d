"""tawk.to webhooks: a visitor's chat start and the offline form's ticket.

Docs: "Webhooks" https://developer.tawk.to/webhooks/ . X-Tawk-Signature is the
lowercase hex HMAC-SHA1 of the raw body, keyed with the webhook's secret; nothing
is signed with a time, so there is no replay window. X-Hook-Event-Id is not signed:
anybody replaying a captured delivery could give it a fresh one. The delivery id is
therefore taken from what is signed: the event, its chat (or ticket) id and its
time, or, failing those, a digest of the body. A retry, or a replay after the
person's erasure, is the same delivery and never stores the person again.

- `chat:start` fires on the first message of a chat, whoever sends it: only a
  visitor's own first message is read (`message.sender.type == "visitor"`), with
  the visitor's name and e-mail. The names tawk.to makes up for anonymous
  visitors (`V1561719148780935`) are not names.
- `ticket:create` (the offline form creates a ticket): the requester's name and
  e-mail, the subject and the message. A ticket an agent opened for themselves
  (`requester.type == "agent"`) is not a visitor's request.
Everything else (`chat:end`, transcripts) is acknowledged and ignored. City,
country, property and visitor ids are never read.

Pre-chat form (option `prechat_form = true`, off by default): tawk.to delivers
the pre-chat answers as the visitor's first message, one `Label : value` line
each, without `visitor.email`. With the option, a line whose label is an e-mail
or phone label (`prechat_labels`, default English, Finnish and Swedish; case and
spacing ignored) fills that field where the visitor object has none; those lines
leave the message, every other line stays in it as written.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import BaseAdapter, Ignored, Item, require, secret_matches
from ingest.adapters.bodies import parse_json_object, require_content_type
from ingest.adapters.mapping import as_dict, as_str, content_id, delivery_id
from ingest.config import Source
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError

_SIGNATURE = re.compile(r"^[0-9a-fA-F]{40}$")
_PLACEHOLDER_NAME = re.compile(r"^V[0-9]+$")
OPTIONS = ("prechat_form", "prechat_labels")
# Pre-chat labels read by default: English, Finnish, Swedish (the default region is FI).
PRECHAT_LABELS: dict[str, tuple[str, ...]] = {
    "email": (
        "email", "e-mail", "email address", "e-mail address", "your email",
        "sähköposti", "sähköpostiosoite", "e-post", "e-postadress", "epost",
    ),
    "phone": (
        "phone", "phone number", "telephone", "mobile", "mobile number", "your phone",
        "puhelin", "puhelinnumero", "matkapuhelin", "telefon", "telefonnummer", "mobil", "mobilnummer",
    ),
}  # fmt: skip
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


class TawkToAdapter(BaseAdapter):
    """A tawk.to property's chats and offline-form tickets."""

    name: ClassVar[str] = "tawkto"

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """Fixed fields (no field or consent mapping); options only for the pre-chat form."""
        for option in source.options:
            if option not in OPTIONS:
                raise ConfigError(f"{key('options')}.{option}: unknown option for format tawkto")
        if not isinstance(source.options.get("prechat_form", False), bool):
            raise ConfigError(f"{key('options')}.prechat_form: expected true or false")
        labels = source.options.get("prechat_labels", {})
        if not isinstance(labels, dict):
            raise ConfigError(f"{key('options')}.prechat_labels: expected a table (email, phone)")
        for name, value in labels.items():
            path = f"{key('options')}.prechat_labels.{name}"
            if name not in PRECHAT_LABELS:
                raise ConfigError(f"{path}: only email and phone are read from the pre-chat form")
            texts = value if isinstance(value, list) else []
            if not texts or not all(isinstance(v, str) and v.strip() for v in texts):
                raise ConfigError(f"{path}: expected a list of labels")
        if source.field_map or source.consent_fields:
            raise ConfigError(f"{key('fields')}: format tawkto has no form fields to map")

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Check X-Tawk-Signature over the raw body, then read the one event it carries."""
        require_content_type(self, request)
        verify(source, request)
        body = parse_json_object(request.body)
        event_id = signed_delivery_id(body, request.body)
        event = body.get("event")
        if event == "chat:start":
            return [chat_start(body, event_id, prechat_labels(source))]
        if event == "ticket:create":
            return [ticket_create(body, event_id)]
        return [Ignored("unsupported_event", event_id)]


def verify(source: Source, request: InboundRequest) -> None:
    """Constant-time check of the hex HMAC-SHA1 of the raw body under every configured secret."""
    given = request.headers.get("x-tawk-signature", "").strip()
    require(bool(_SIGNATURE.match(given)))
    require(
        secret_matches(
            source.secrets,
            lambda key: hmac.new(key, request.body, hashlib.sha1).hexdigest().encode("ascii"),
            given.lower().encode("ascii"),
        )
    )


def signed_delivery_id(body: dict[str, Any], raw: bytes) -> str:
    """The delivery id from the signed body: event, chat or ticket id and time; else the body's digest."""
    event, when = as_str(body.get("event")), as_str(body.get("time"))
    subject = as_str(body.get("chatId")) or as_str(as_dict(body.get("ticket")).get("id"))
    derived = delivery_id(f"{event}:{subject}:{when}") if event and when and subject else None
    return derived or content_id(raw)


def prechat_labels(source: Source) -> dict[str, str] | None:
    """Folded label -> field of the source's pre-chat form, or None when the option is off."""
    if source.options.get("prechat_form") is not True:
        return None
    configured = source.options.get("prechat_labels", {})
    return {
        _fold(label): field
        for field, defaults in PRECHAT_LABELS.items()
        for label in configured.get(field, defaults)
    }


def chat_start(body: dict[str, Any], event_id: str | None, labels: dict[str, str] | None = None) -> Item:
    """The visitor's name, e-mail and first message; a chat an agent opened is not read.

    With `labels` (the pre-chat form option), e-mail and phone lines of the first
    message fill what the visitor object lacks, and leave the message.
    """
    message = as_dict(body.get("message"))
    if as_dict(message.get("sender")).get("type") != "visitor":
        return Ignored("not_from_the_visitor", event_id)
    visitor = as_dict(body.get("visitor"))
    fields = _person(visitor)
    text = message.get("text")
    if labels is not None and isinstance(text, str):
        answers, text = prechat_answers(text, labels)
        for name, value in answers.items():
            fields.setdefault(name, value)
    if _has_text(text):
        fields["message"] = text
    return _chat(fields, event_id)


def prechat_answers(text: str, labels: dict[str, str]) -> tuple[dict[str, str], str]:
    """The first `Label : value` line per labelled field, and the text without those lines."""
    answers: dict[str, str] = {}
    kept = []
    for line in _LINE_BREAKS.split(text):
        label, colon, value = line.partition(":")
        field = labels.get(_fold(label.rstrip("* \t"))) if colon else None
        if field is None:
            kept.append(line)
        elif value.strip():
            answers.setdefault(field, value.strip())
    return answers, "\n".join(kept).strip()


def _fold(label: str) -> str:
    return " ".join(label.casefold().split())


def ticket_create(body: dict[str, Any], event_id: str | None) -> Item:
    """The requester's name and e-mail, and the ticket's subject and message as one text."""
    requester = as_dict(body.get("requester"))
    if requester.get("type") == "agent":
        return Ignored("agent_ticket", event_id)
    fields = _person(requester)
    ticket = as_dict(body.get("ticket"))
    subject, text = ticket.get("subject"), ticket.get("message")
    parts = [p.strip() for p in (subject, text) if isinstance(p, str) and p.strip()]
    if len(parts) == 2 and parts[0] == parts[1]:  # noqa: PLR2004 - subject and message
        parts = parts[1:]
    if parts:
        fields["message"] = "\n\n".join(parts)
    return _chat(fields, event_id)


def _person(person: dict[str, Any]) -> dict[str, object]:
    """Name and e-mail as sent (the schema validates them); a generated visitor name is dropped."""
    fields: dict[str, object] = {}
    name = as_str(person.get("name"))
    if name is not None and not _PLACEHOLDER_NAME.match(name.strip()):
        fields["name"] = name
    email = person.get("email")
    if email is not None and email != "":
        fields["email"] = email
    return fields


def _has_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _chat(fields: dict[str, object], event_id: str | None) -> RawSubmission:
    return RawSubmission(fields=fields, delivery_id=event_id, optional_contact=True)


ADAPTER = TawkToAdapter()
