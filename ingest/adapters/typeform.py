"""Typeform webhooks (`form_response`), signed with Typeform-Signature: sha256=<base64 HMAC-SHA256>.

Docs: "Secure your webhooks" https://www.typeform.com/developers/webhooks/secure-your-webhooks/
and "Example webhook payload" https://www.typeform.com/developers/webhooks/example-payload/ .
The signature covers the raw body (no timestamp, so redeliveries are caught by
`event_id`). Answers are matched to their question through `field.id` /
`field.ref` and the payload's `definition`; hidden fields, variables and scores
are never read.

Typeform counts any 2xx as delivered and retries failures for hours, so a
signed delivery that can never be stored (not JSON, no event id, no usable
e-mail or phone) is answered 202 `ignored` with a reason, and counted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import LARGE_DELIVERY_BYTES, BaseAdapter, Ignored, Item, require, secret_matches
from ingest.adapters.bodies import parse_json_object, require_content_type
from ingest.adapters.mapping import (
    Answer,
    Option,
    as_dict,
    as_list,
    as_str,
    check_mapping,
    delivery_id,
    form_delivery,
)
from ingest.config import Source
from ingest.domain import InboundRequest
from ingest.errors import InvalidSignature, MalformedBody

PREFIX = "sha256="
# Answer types whose value sits under the key of the same name (choice/choices are read apart).
_SCALARS = frozenset({"text", "email", "phone_number", "number", "boolean", "date", "url", "file_url"})
TYPE_DEFAULTS = {"email": "email", "phone_number": "phone", "long_text": "message"}


class TypeformAdapter(BaseAdapter):
    """A Typeform form's responses; questions are mapped by ref, id, title or type."""

    name: ClassVar[str] = "typeform"
    max_body_bytes: ClassVar[int | None] = LARGE_DELIVERY_BYTES

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """The field and consent mapping must name fields."""
        check_mapping(source, key)

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Verify the signature, then read one form_response."""
        require_content_type(self, request)
        verify(source, request)
        try:
            payload = parse_json_object(request.body)
        except MalformedBody:
            return [Ignored("unreadable_payload")]  # signed by Typeform: a 400 would only be retried
        event_id = delivery_id(payload.get("event_id"))
        if payload.get("event_type") != "form_response":
            return [Ignored("unsupported_event", event_id)]
        response = payload.get("form_response")
        if event_id is None or not isinstance(response, dict):
            return [Ignored("unreadable_payload", event_id)]
        answers = read_answers(response)
        return form_delivery(answers, source, event_id, TYPE_DEFAULTS)


def verify(source: Source, request: InboundRequest) -> None:
    """Typeform-Signature must be sha256= + base64 HMAC-SHA256 of the raw body under a secret."""
    header = request.headers.get("typeform-signature", "")
    require(header.startswith(PREFIX))
    try:
        given = base64.b64decode(header[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature from None
    require(
        secret_matches(
            source.secrets, lambda key: hmac.new(key, request.body, hashlib.sha256).digest(), given
        )
    )


def read_answers(response: dict[str, Any]) -> list[Answer]:
    """The response's answers with their question's identifiers; nothing else of the payload."""
    questions = _questions(response.get("definition"))
    answers = []
    for item in as_list(response.get("answers")):
        if not isinstance(item, dict):
            continue
        field = as_dict(item.get("field"))
        field_id = as_str(field.get("id"))
        question = questions.get(field_id, {}) if field_id else {}
        ref = as_str(field.get("ref")) or as_str(question.get("ref"))
        title = as_str(question.get("title"))
        identifiers = tuple(x for x in (ref, field_id, title) if x)
        kind = as_str(field.get("type")) or as_str(question.get("type")) or as_str(item.get("type"))
        value, options = _value(item, question)
        answers.append(Answer(identifiers=identifiers, type=kind, value=value, options=options))
    return answers


def _questions(definition: object) -> dict[str, dict[str, Any]]:
    questions: dict[str, dict[str, Any]] = {}
    for question in as_list(as_dict(definition).get("fields")):
        if isinstance(question, dict) and as_str(question.get("id")):
            questions.setdefault(question["id"], question)
    return questions


def _value(item: dict[str, Any], question: dict[str, Any]) -> tuple[object, tuple[Option, ...]]:
    """An answer's value: a scalar, or for choices the chosen labels and every option listed."""
    kind = item.get("type")
    if kind in _SCALARS:
        return item.get(kind), ()
    if kind == "choice":
        chosen = as_dict(item.get("choice"))
        labels = [as_str(chosen.get("label")), as_str(chosen.get("other"))]
        keys = {as_str(chosen.get("id")), as_str(chosen.get("ref"))}
    elif kind == "choices":
        chosen = as_dict(item.get("choices"))
        labels = [as_str(x) for x in as_list(chosen.get("labels"))] + [as_str(chosen.get("other"))]
        keys = {as_str(x) for x in as_list(chosen.get("ids")) + as_list(chosen.get("refs"))}
    else:
        return None, ()  # payment, file and other structured answers carry no contact field
    texts = [x for x in labels if x]
    keys.discard(None)
    options = []
    for choice in as_list(question.get("choices")):
        if isinstance(choice, dict):
            names = tuple(
                x
                for x in (as_str(choice.get("id")), as_str(choice.get("ref")), as_str(choice.get("label")))
                if x
            )
            selected = bool(keys.intersection(names)) or as_str(choice.get("label")) in texts
            options.append(Option(identifiers=names, selected=selected))
    return texts, tuple(options)


ADAPTER = TypeformAdapter()
