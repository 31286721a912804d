"""Tally form webhooks (`FORM_RESPONSE`), signed with Tally-Signature: base64 HMAC-SHA256.

Docs: "Webhooks" https://tally.so/help/webhooks . The page says the header is
"a SHA256 cryptographic hash of the webhook payload" and its example signs
`JSON.stringify(req.body)`, so the raw body is tried first, then the compact
re-serialisation of the parsed body. There is no timestamp: redeliveries are
caught by `eventId`.

Fields are `{key, label, type, value}`; choice values are option ids resolved
through `options`. Hidden and calculated fields are never read, and the
per-option true/false copies Tally adds after a CHECKBOXES field are skipped.

Tally retries a failed delivery five times over a day ("Retrying webhook
events", developers.tally.so), so a signed delivery that can never be stored
(not JSON, no event id, no usable e-mail or phone) is answered 202 `ignored`
with a reason, and counted.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import BaseAdapter, Ignored, Item, require, secret_matches
from ingest.adapters.bodies import parse_json_object, require_content_type
from ingest.adapters.mapping import (
    Answer,
    Option,
    as_dict,
    as_list,
    as_str,
    check_mapping,
    compact_json,
    delivery_id,
    form_delivery,
)
from ingest.config import Source
from ingest.domain import InboundRequest
from ingest.errors import InvalidSignature, MalformedBody

TYPE_DEFAULTS = {"INPUT_EMAIL": "email", "INPUT_PHONE_NUMBER": "phone", "TEXTAREA": "message"}
_NEVER_READ = frozenset({"HIDDEN_FIELDS", "CALCULATED_FIELDS"})
_CHOICES = frozenset({"MULTIPLE_CHOICE", "DROPDOWN", "MULTI_SELECT", "CHECKBOXES"})
# Usable when a source names them, never guessed (a payer's e-mail is not a contact e-mail).
_NOT_BY_DEFAULT = frozenset({"PAYMENT"})


class TallyAdapter(BaseAdapter):
    """A Tally form's responses; fields are mapped by key, label or type."""

    name: ClassVar[str] = "tally"

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """The field and consent mapping must name fields."""
        check_mapping(source, key)

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Verify the signature, then read one FORM_RESPONSE."""
        require_content_type(self, request)
        payload = verify(source, request)
        if payload is None:
            return [Ignored("unreadable_payload")]  # signed by Tally: a 400 would only be retried
        event_id = delivery_id(payload.get("eventId"))
        if payload.get("eventType") != "FORM_RESPONSE":
            return [Ignored("unsupported_event", event_id)]
        data = payload.get("data")
        if event_id is None or not isinstance(data, dict):
            return [Ignored("unreadable_payload", event_id)]
        answers = read_answers(as_list(data.get("fields")))
        return form_delivery(answers, source, event_id, TYPE_DEFAULTS)


def verify(source: Source, request: InboundRequest) -> dict[str, Any] | None:
    """Check Tally-Signature on the raw body, else on its compact re-serialisation; return the body.

    None: the raw body is signed but is no JSON object (it can never be read).
    """
    try:
        given = base64.b64decode(request.headers.get("tally-signature", "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature from None
    require(bool(given))
    if _signed(source, request.body, given):
        try:
            return parse_json_object(request.body)
        except MalformedBody:
            return None
    try:
        payload = parse_json_object(request.body)
    except MalformedBody:
        raise InvalidSignature from None
    compact = compact_json(payload)
    require(compact != request.body and _signed(source, compact, given))
    return payload


def _signed(source: Source, message: bytes, given: bytes) -> bool:
    return secret_matches(source.secrets, lambda key: hmac.new(key, message, hashlib.sha256).digest(), given)


def read_answers(fields: list[Any]) -> list[Answer]:
    """The answered questions, minus hidden/calculated fields and the per-option checkbox copies."""
    items = [f for f in fields if isinstance(f, dict) and as_str(f.get("key"))]
    parents = _Prefixes(
        f["key"] + "_" for f in items if f.get("type") == "CHECKBOXES" and isinstance(f.get("options"), list)
    )
    answers = []
    for item in items:
        kind = as_str(item.get("type"))
        key: str = item["key"]
        if kind in _NEVER_READ:
            continue
        if kind == "CHECKBOXES" and "options" not in item and parents.prefix_of(key):
            continue  # "Checkboxes (Soccer)": true/false copy of one option of the field above
        label = as_str(item.get("label"))
        value, options = _value(item, kind)
        answers.append(
            Answer(
                identifiers=(key, label) if label else (key,),
                type=kind,
                value=value,
                options=options,
                by_default=kind not in _NOT_BY_DEFAULT,
            )
        )
    return answers


class _Prefixes:
    """Strings asked "does one of you start this key?" with a binary search, not a test per string.

    `key.startswith(tuple(parents))` costs keys x parents: quadratic in a body of
    many checkbox fields. Sorted, the strings that start with a member form a run
    right after it; so a member that starts `key` also starts the greatest member
    not after `key`, and then so does that one's shortest member prefix (`root`).
    """

    def __init__(self, prefixes: Iterable[str]) -> None:
        self.members = sorted(set(prefixes))
        self.root: dict[str, str] = {}
        root = None
        for member in self.members:
            if root is None or not member.startswith(root):
                root = member
            self.root[member] = root

    def prefix_of(self, key: str) -> bool:
        """Whether a member starts `key`."""
        at = bisect.bisect_right(self.members, key)
        return at > 0 and key.startswith(self.root[self.members[at - 1]])


def _value(item: dict[str, Any], kind: str | None) -> tuple[object, tuple[Option, ...]]:
    """A field's value; option ids become the chosen options' texts."""
    value = item.get("value")
    if not isinstance(item.get("options"), list):
        return value, ()
    texts: dict[str, str] = {}
    for option in as_list(item.get("options")):
        option_id, text = as_str(as_dict(option).get("id")), as_str(as_dict(option).get("text"))
        if option_id and text:
            texts.setdefault(option_id, text)
    chosen = [x for x in (value if isinstance(value, list) else [value]) if isinstance(x, str) and x in texts]
    labels = [texts[x] for x in chosen]
    if kind not in _CHOICES:
        return labels, ()  # RANKING: an order of all options, not a choice
    return labels, tuple(
        Option(identifiers=(oid, text), selected=oid in chosen) for oid, text in texts.items()
    )


ADAPTER = TallyAdapter()
