"""Map a form builder's labelled answers to canonical fields and consents (pure helpers, no adapter).

Form-provider adapters (Typeform, Tally, Webflow, ...) turn each answer of a
response into an `Answer`; `pick_fields` and `pick_consents` then apply the
source's mapping. A source's `fields` table (canonical field -> provider field)
and `consent_fields` table (provider field -> consent id) name a provider field
by any of its identifiers (ref, key, id, label: exact first, then ignoring case
and spacing) or, failing that, by its type.

Without a `fields` entry, a canonical field takes the first answer of a type the
adapter declares for it (an `email` question is the e-mail), else the first
answer with a text value whose identifier reads like it, whole words only:
  email       "email", "e-mail"
  phone       "phone", "telephone", "mobile"
  first_name  "first name", "firstname", "given name", "forename"
  last_name   "last name", "lastname", "surname", "family name"
  name        exactly "name", or containing "full name", "fullname", "your name"
  message     "message", "comment", "comments"
Everything not picked is dropped here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.adapters.base import Delivery
from ingest.config import CANONICAL_FIELDS, Source
from ingest.consent import YES_WORDS
from ingest.domain import RawSubmission
from ingest.errors import ConfigError

MAX_DELIVERY_ID = 200  # ingest.deliveries.delivery_id CHECK
# English, Finnish and Swedish labels (the default region is FI): providers without
# field types (Webflow, Netlify, Jotform) are matched by their labels' words.
_NAME_RULES: dict[str, Callable[[str], bool]] = {
    "email": lambda w: _has(w, "email", "e mail", "sähköposti", "sahkoposti", "e post", "epost"),
    "phone": lambda w: _has(
        w, "phone", "telephone", "mobile", "puhelin", "puhelinnumero", "matkapuhelin", "telefon", "mobil"
    ),
    "first_name": lambda w: _has(
        w, "first name", "firstname", "given name", "forename", "etunimi", "förnamn", "fornamn"
    ),
    "last_name": lambda w: _has(
        w, "last name", "lastname", "surname", "family name", "sukunimi", "efternamn"
    ),
    "name": lambda w: (
        w.strip() in ("name", "nimi", "namn")
        or _has(w, "full name", "fullname", "your name", "koko nimi", "fullständigt namn")
    ),
    "message": lambda w: _has(w, "message", "comment", "comments", "viesti", "meddelande"),
}
# Checkbox texts that read as consent given: "Yes, ...", "I agree ...", "Kyllä", "Ja".
_AFFIRMATIVE_STARTS = (("yes",), ("i", "agree"), ("agree",), ("kyllä",), ("ja",), ("hyväksyn",))
_CAMEL = re.compile(r"(?<=[a-z]{2})(?=[A-Z])")  # firstName, not iPhone
_WORD = re.compile(r"[^\W_]+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Option:
    """One option of a choice question: its identifiers (id, ref, text) and whether it was chosen."""

    identifiers: tuple[str, ...]
    selected: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer of a form response, as an adapter read it (untrusted values).

    `value`: text, number or boolean; for a choice question the list of chosen
    option texts. `options`: every option of a choice question when the payload
    lists them all, else empty. `by_default=False` keeps an answer out of the
    defaults (it is used only where the config names it), e.g. a payment's e-mail.
    """

    identifiers: tuple[str, ...]
    type: str | None
    value: object
    options: tuple[Option, ...] = ()
    by_default: bool = True


def pick_fields(
    answers: Sequence[Answer], source: Source, type_defaults: Mapping[str, str] | None = None
) -> dict[str, object]:
    """The canonical fields of a response: configured mapping first, then the defaults.

    `type_defaults` maps a provider field type to the canonical field it fills
    (e.g. {"email": "email", "phone_number": "phone"}).
    """
    by_type = {_fold(kind): canonical for kind, canonical in (type_defaults or {}).items()}
    # A consent checkbox never doubles as a contact field.
    used = {i for ident in source.consent_fields for i in _find(answers, ident)}
    fields: dict[str, object] = {}
    for canonical in CANONICAL_FIELDS:
        ident = source.field_map.get(canonical)
        if ident is None:
            continue
        for i in _find(answers, ident):
            value = _text(answers[i].value)
            if i not in used and value is not None:
                fields[canonical] = value
                used.add(i)
                break
    for canonical in CANONICAL_FIELDS:
        if canonical in source.field_map:
            continue  # configured but unanswered: no guessing
        found = _default(answers, canonical, by_type, used)
        if found is not None:
            fields[canonical] = _text(answers[found].value)
            used.add(found)
    return fields


def pick_consents(answers: Sequence[Answer], source: Source) -> dict[str, bool]:
    """One decision per configured consent: granted only by a ticked box or a chosen option.

    A field named directly counts as ticked when its value is true (or "yes",
    "on", ...), or, for a choice question, when its only option is chosen or
    every chosen option reads "yes". A name that is an option's id or text grants
    when that option is chosen. Unticked, unanswered or absent: not granted.
    """
    decisions = dict.fromkeys(source.consent_fields.values(), False)
    for ident, consent_id in source.consent_fields.items():
        if any(_ticked(answers[i]) for i in _find(answers, ident)) or _option_chosen(answers, ident):
            decisions[consent_id] = True
    return decisions


def absent_fields(answers: Sequence[Answer], source: Source) -> tuple[str, ...]:
    """The keys of the source's `fields` and `consent_fields` that name no answer of this delivery.

    Config key paths only (`fields.message`, `consent_fields.newsletter_optin`),
    never values, for a counter: a renamed provider field shows up as a jump.
    A provider that leaves an unanswered question out (Typeform) makes an
    optional one count here too; one that sends it blank (Webflow) does not.
    """
    absent = [f"fields.{name}" for name, ident in source.field_map.items() if not _find(answers, ident)]
    absent.extend(
        f"consent_fields.{ident}"
        for ident in source.consent_fields
        if not _find(answers, ident) and not _option_listed(answers, ident)
    )
    return tuple(absent)


def check_mapping(source: Source, key: Callable[[str], str], allowed_options: Iterable[str] = ()) -> None:
    """Refuse `fields`, `consent_fields` or `options` that cannot work (ConfigError names the key)."""
    seen: dict[str, str] = {}
    for canonical, ident in source.field_map.items():
        if not ident.strip():
            raise ConfigError(
                f"{key('fields')}.{canonical}: must name a provider field (ref, key, id or label)"
            )
        other = seen.setdefault(_fold(ident), canonical)
        if other != canonical:
            raise ConfigError(f"{key('fields')}.{canonical}: the same provider field as fields.{other}")
    for ident in source.consent_fields:
        if not ident.strip():
            raise ConfigError(f'{key("consent_fields")}."": must name a provider field or option')
        if _fold(ident) in seen:
            raise ConfigError(f"{key('consent_fields')}.{ident}: also mapped to fields.{seen[_fold(ident)]}")
    allowed = set(allowed_options)
    for name in source.options:
        if name not in allowed:
            raise ConfigError(f"{key('options')}.{name}: unknown option for format {source.format}")


def delivery_id(value: object) -> str | None:
    """The provider's delivery id as stored for idempotency, or None if it cannot be one."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > MAX_DELIVERY_ID or not value.isprintable():
        return None
    return value


def content_id(content: bytes) -> str:
    """A delivery id for a signed delivery whose own id is missing: the digest of what was signed.

    Without one, every replay of a captured delivery would be stored anew.
    """
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


def compact_json(value: object) -> bytes:
    """JSON as JavaScript's JSON.stringify writes it (no spaces, non-ASCII kept), for signature fallbacks."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a "\\ud800" escape): JSON.stringify writes it escaped.
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text).encode("utf-8")


def as_dict(value: object) -> dict[str, Any]:
    """The value if it is a JSON object, else an empty one (provider payloads are untrusted)."""
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    """The value if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def as_str(value: object) -> str | None:
    """The value if it is a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _words(identifier: str) -> str:
    """' first name ' for 'firstName', 'First Name', 'first_name' or 'First name?'."""
    return " " + " ".join(_WORD.findall(_CAMEL.sub(" ", identifier).casefold())) + " "


def _has(words: str, *phrases: str) -> bool:
    return any(f" {phrase} " in words for phrase in phrases)


def _find(answers: Sequence[Answer], ident: str) -> list[int]:
    """Indexes of the answers an identifier names: exact identifier, then folded, then by type."""
    folded = _fold(ident)
    exact, loose, typed = [], [], []
    for i, answer in enumerate(answers):
        if ident in answer.identifiers:
            exact.append(i)
        elif any(_fold(x) == folded for x in answer.identifiers):
            loose.append(i)
        elif answer.type is not None and _fold(answer.type) == folded:
            typed.append(i)
    return exact + loose + typed


def _default(
    answers: Sequence[Answer], canonical: str, by_type: Mapping[str, str], used: set[int]
) -> int | None:
    candidates = [i for i, a in enumerate(answers) if i not in used and a.by_default]
    for i in candidates:
        kind = answers[i].type
        if kind is not None and by_type.get(_fold(kind)) == canonical and _text(answers[i].value) is not None:
            return i
    rule = _NAME_RULES[canonical]
    for i in candidates:
        value = answers[i].value
        # Guessing from a label only for typed-in text: a "Can we e-mail you?" yes/no is no address.
        text_like = isinstance(value, str) or (
            canonical == "phone" and isinstance(value, int | float) and not isinstance(value, bool)
        )
        if text_like and _text(value) is not None and any(rule(_words(x)) for x in answers[i].identifiers):
            return i
    return None


def _text(value: object) -> object:
    """A text or number the schema can read; a list of chosen texts joined; None otherwise or if empty."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return _text(", ".join(value))
    return None


def _yes(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    if isinstance(value, str):
        folded = _fold(value)
        words = tuple(_words(value).split())
        return folded in YES_WORDS or any(words[: len(start)] == start for start in _AFFIRMATIVE_STARTS)
    return False


def _ticked(answer: Answer) -> bool:
    if answer.options:
        chosen = [o for o in answer.options if o.selected]
        if len(answer.options) == 1:
            return bool(chosen)
        return bool(chosen) and all(any(_yes(x) for x in o.identifiers) for o in chosen)
    if isinstance(answer.value, list):
        return bool(answer.value) and all(_yes(v) for v in answer.value)
    return _yes(answer.value)


def _option_listed(answers: Sequence[Answer], ident: str) -> bool:
    """Whether an option named `ident` is in the delivery, chosen or not."""
    folded = _fold(ident)
    for answer in answers:
        names = [x for o in answer.options for x in o.identifiers]
        if isinstance(answer.value, list):
            names.extend(v for v in answer.value if isinstance(v, str))
        if any(x == ident or _fold(x) == folded for x in names):
            return True
    return False


def _option_chosen(answers: Sequence[Answer], ident: str) -> bool:
    folded = _fold(ident)
    for answer in answers:
        if answer.options:
            names = [x for o in answer.options if o.selected for x in o.identifiers]
        elif isinstance(answer.value, list):
            names = [v for v in answer.value if isinstance(v, str)]
        else:
            continue
        if any(x == ident or _fold(x) == folded for x in names):
            return True
    return False


def form_delivery(
    answers: Sequence[Answer],
    source: Source,
    delivery_id: str,
    type_defaults: Mapping[str, str] | None = None,
) -> Delivery:
    """One form provider's response as a delivery, with the configured keys it did not carry.

    A provider's webhook cannot correct a field: an invalid one is dropped when an e-mail
    or phone still holds (drop_invalid).
    """
    submission = RawSubmission(
        fields=pick_fields(answers, source, type_defaults),
        consents=dict(pick_consents(answers, source)),
        delivery_id=delivery_id,
        drop_invalid=True,
    )
    return Delivery([submission], absent_fields(answers, source))
