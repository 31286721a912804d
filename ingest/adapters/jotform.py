"""Jotform webhooks: a multipart POST per submission, answers as a JSON string in `rawRequest`.

Docs: "How to Set Up a Webhook with Jotform"
https://www.jotform.com/help/245-how-to-setup-a-webhook-with-jotform/ ; field names
as Jotform's own samples read them (github.com/jotform/api-use-cases
myCRM/jotform_integration/webhook_callback.php: `formID`, `submissionID`,
`rawRequest`). Jotform signs nothing, so the webhook URL carries a secret:
`?key=<secret>`, compared in constant time with every configured secret.
`submissionID` is the delivery id.

`rawRequest` keys are `q<N>_<name>` (`q3_fullName` {first, last}, `q4_email`,
`q5_phoneNumber` {full} or {area, phone}, `q6_message`); the part after `q<N>_`
chooses the canonical field, and a source's `fields` table may name the whole
key or that part. `pretty`, `ip`, `formTitle`, `username` and every other part
are never read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ingest.adapters.base import BaseAdapter, Item, require, secret_matches
from ingest.adapters.bodies import form_pairs, parse_json_object
from ingest.adapters.mapping import (
    Answer,
    as_str,
    check_mapping,
    delivery_id,
    form_delivery,
)
from ingest.config import Source
from ingest.domain import InboundRequest
from ingest.errors import MalformedBody

TYPE_DEFAULTS = {"name": "name", "email": "email", "phone": "phone", "message": "message"}
_QUESTION = re.compile(r"q([0-9]+)_(.+)", re.DOTALL)
# Label-derived names carry numbering: "1. Name" becomes "1Name69". Stripped with
# str.strip, not a regex: `[0-9]+\Z` is retried at every digit of a long run (quadratic).
_DIGITS = "0123456789"
_SLASHED = re.compile(r"\\(.)", re.DOTALL)
_ONLY_ONCE = frozenset({"submissionID", "rawRequest"})


class JotformAdapter(BaseAdapter):
    """Jotform submissions, authenticated by a secret in the webhook URL."""

    name: ClassVar[str] = "jotform"
    content_types: ClassVar[frozenset[str]] = frozenset(
        {"multipart/form-data", "application/x-www-form-urlencoded"}
    )

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """The field and consent mapping must name fields."""
        check_mapping(source, key)

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Check the URL key, then read the submission's answers from rawRequest."""
        verify(source, request)
        parts: dict[str, str] = {}
        for name, value in form_pairs(self, request):
            if name in _ONLY_ONCE and name in parts:
                raise MalformedBody
            parts.setdefault(name, value)
        submission_id = delivery_id(parts.get("submissionID"))
        raw = parts.get("rawRequest")
        if submission_id is None or raw is None:
            raise MalformedBody
        answers = read_answers(read_raw_request(raw))
        return form_delivery(answers, source, submission_id, TYPE_DEFAULTS)


def verify(source: Source, request: InboundRequest) -> None:
    """The `key` query parameter must equal a configured secret (compared as SHA-256, constant time)."""
    given = request.query.get("key", "")
    require(bool(given))
    require(
        secret_matches(
            source.secrets,
            lambda secret: hashlib.sha256(secret).digest(),
            # Hashing both sides keeps the comparison's time independent of the lengths.
            hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
        )
    )


def read_raw_request(text: str) -> dict[str, Any]:
    """The rawRequest part as a JSON object; a slash-escaped copy is unescaped first.

    Plain JSON is tried first: an escaped object (a backslash before every quote)
    is never valid JSON, so the two readings cannot be confused.
    """
    body = text.encode("utf-8", "surrogatepass")
    try:
        return parse_json_object(body)
    except MalformedBody:
        unslashed = _SLASHED.sub(r"\1", text)  # PHP stripslashes: the inverse of addslashes
        if unslashed == text:
            raise
        return parse_json_object(unslashed.encode("utf-8", "surrogatepass"))


def read_answers(raw: dict[str, Any]) -> list[Answer]:
    """One answer per `q<N>_<name>` key; slug, event_id and other keys are skipped."""
    answers = []
    for key, value in raw.items():
        match = _QUESTION.fullmatch(key)
        if match is None:
            continue
        name = match.group(2)
        answers.append(Answer(identifiers=(key, name), type=_kind(name), value=_value(value)))
    return answers


def _kind(name: str) -> str | None:
    """The canonical field a question's name stands for, if it plainly does."""
    word = name.strip(_DIGITS).casefold()
    if word in ("fullname", "name"):
        return "name"
    if word == "email":
        return "email"  # "emailAddress" is still guessed from its words; "emailMe" (a checkbox) is not typed
    if word.startswith("phone"):
        return "phone"
    if word in ("message", "comments", "comment"):
        return "message"
    return None


def _value(value: object) -> object:
    """A scalar or list as sent; a name or phone object joined into text; other objects dropped."""
    if not isinstance(value, dict):
        return value
    if any(part in value for part in ("first", "middle", "last")):
        return _join(value, ("first", "middle", "last"))
    if "full" in value:
        return as_str(value.get("full"))
    if "phone" in value or "area" in value:
        return _join(value, ("area", "phone"))
    return None  # date, address, file and other structured answers carry no contact field


def _join(value: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    words = [text.strip() for k in keys if (text := as_str(value.get(k))) and text.strip()]
    return " ".join(words) or None


ADAPTER = JotformAdapter()
