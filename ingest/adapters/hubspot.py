"""HubSpot Forms API v3 submission bodies, posted to us and signed per Standard Webhooks.

Docs: "Submit data to a form (supporting authentication)"
https://developers.hubspot.com/docs/methods/forms/submit_form_v3 and the legacy
"Submit data to a form" https://legacydocs.hubspot.com/docs/methods/forms/submit_form .
HubSpot itself never calls us: a site that already builds these bodies for
HubSpot posts them here too, signed like the `json` format (webhook-id is the
delivery id). `context` (hutk cookie, IP address, page) and `submittedAt` are
never read.

`fields[]` are `{objectTypeId, name, value}` with HubSpot property names
(`firstname`, `lastname`, `email`, `phone`/`mobilephone`, `message`); a
source's `fields` table may name a property as `name` or `objectTypeId/name`.
Only contact properties ("0-1") fill fields by default: a company's phone is
not the person's.

`legalConsentOptions.consent` becomes consent events whose wording is the
`text` the person saw, verbatim, under a content-addressed id
(`hubspot:process:<purpose>:<sha256(text)[:16]>`,
`hubspot:sub<subscriptionTypeId>:<purpose>:<sha256(text)[:16]>`), so other
wording or another purpose never shares an id.

`legitimateInterest` is not consent: it becomes a `Notice` (its `text` verbatim,
`legalBasis`, `subscriptionTypeId` mapped to a purpose through
`subscription_purposes` as for consent, default direct_marketing, and `value`),
the information the person was given (Art. 13, 21). It is read and checked
here; ingest/store/notices.py stores it once domain.RawSubmission and Envelope
carry it (see docs/privacy.md).

HubSpot itself never retries these bodies: the sender is the site's own code,
which can fix a refused one, so content errors stay 422 (DESIGN §8, like `json`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import ClassVar

from ingest.adapters.base import BaseAdapter, Delivery, Item
from ingest.adapters.bodies import parse_json_object, require_content_type
from ingest.adapters.json import verify_standard_webhook
from ingest.adapters.mapping import (
    Answer,
    absent_fields,
    as_dict,
    as_str,
    check_mapping,
    pick_consents,
    pick_fields,
)
from ingest.config import NOTICE_PURPOSES, Source
from ingest.domain import InboundRequest, Notice, RawSubmission
from ingest.errors import ConfigError, ValidationFailed

CONTACT = "0-1"
TYPE_DEFAULTS = {
    "firstname": "first_name",
    "lastname": "last_name",
    "email": "email",
    "phone": "phone",
    "mobilephone": "phone",
    "message": "message",
}
OPTIONS = ("process_purpose", "subscription_purposes")
MARKETING = "direct_marketing"
_SUBSCRIPTION_ID = re.compile(r"[0-9]{1,20}")
_CONSENT = "legalConsentOptions.consent"
_INTEREST = "legalConsentOptions.legitimateInterest"
_PROVIDER_BASIS = re.compile(r"[A-Za-z0-9_]{1,64}")


class HubSpotAdapter(BaseAdapter):
    """HubSpot-shaped form submissions; properties by name, consents with their own wording."""

    name: ClassVar[str] = "hubspot"

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """The mapping must name fields; purposes in options must be purposes of the notice."""
        check_mapping(source, key, OPTIONS)
        process = source.options.get("process_purpose")
        if process is not None and process not in NOTICE_PURPOSES:
            raise ConfigError(f"{key('options')}.process_purpose: one of {', '.join(NOTICE_PURPOSES)}")
        subscriptions = source.options.get("subscription_purposes", {})
        if not isinstance(subscriptions, dict):
            raise ConfigError(f"{key('options')}.subscription_purposes: expected a table")
        for sub_id, purpose in subscriptions.items():
            if not _SUBSCRIPTION_ID.fullmatch(sub_id):
                raise ConfigError(
                    f"{key('options')}.subscription_purposes.{sub_id}: a subscriptionTypeId (digits)"
                )
            if purpose not in NOTICE_PURPOSES:
                raise ConfigError(
                    f"{key('options')}.subscription_purposes.{sub_id}: one of {', '.join(NOTICE_PURPOSES)}"
                )

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Verify the Standard Webhooks signature, then read the fields and the consent block."""
        require_content_type(self, request)
        webhook_id = verify_standard_webhook(source, request)
        payload = parse_json_object(request.body)
        answers = read_answers(payload.get("fields"))
        shown = read_consents(payload.get("legalConsentOptions"), source)
        notices = read_notices(payload.get("legalConsentOptions"), source)
        consents: dict[str, object] = dict(pick_consents(answers, source))
        consents.update({consent_id: value for consent_id, (value, _, _) in shown.items()})
        submission = RawSubmission(
            fields=pick_fields(answers, source, TYPE_DEFAULTS),
            consents=consents,
            inline_consent_texts={cid: (purpose, words) for cid, (_, purpose, words) in shown.items()},
            delivery_id=webhook_id,
            notices=notices,
        )
        return Delivery([submission], absent_fields(answers, source))


def read_answers(fields: object) -> list[Answer]:
    """One answer per property; only contact properties are candidates by default."""
    answers = []
    for item in fields if isinstance(fields, list) else []:
        if not isinstance(item, dict) or not (name := as_str(item.get("name"))):
            continue
        # Examples without objectTypeId are contact properties; any other object is not the person.
        contact = item.get("objectTypeId") in (None, CONTACT)
        object_type = as_str(item.get("objectTypeId"))
        answers.append(
            Answer(
                identifiers=(name, f"{object_type}/{name}") if object_type else (name,),
                type=name if contact else None,
                value=item.get("value"),
                by_default=contact,
            )
        )
    return answers


def read_consents(options: object, source: Source) -> dict[str, tuple[object, str, str]]:
    """Consent id -> (the person's answer, purpose, exact wording) for every consent item shown.

    An item whose wording cannot be recorded is refused (422), never dropped or
    granted: the privacy officer must be able to show what the person agreed to.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValidationFailed({"legalConsentOptions": ["Must be an object."]})
    consent = options.get("consent")
    if consent is None:
        return {}  # legitimateInterest alone, or nothing: no consent was asked for
    if not isinstance(consent, dict):
        raise ValidationFailed({_CONSENT: ["Must be an object."]})
    found: dict[str, tuple[object, str, str]] = {}
    if "consentToProcess" in consent or "text" in consent:
        purpose = source.options.get("process_purpose") or source.purposes[0]
        words = _wording(consent.get("text"), f"{_CONSENT}.text")
        _add(
            found,
            f"hubspot:process:{purpose}:{_digest(words)}",
            consent.get("consentToProcess"),
            purpose,
            words,
        )
    communications = consent.get("communications")
    if communications is None:
        return found
    if not isinstance(communications, list):
        raise ValidationFailed({f"{_CONSENT}.communications": ["Must be a list."]})
    mapping = as_dict(source.options.get("subscription_purposes"))
    for i, item in enumerate(communications):
        path = f"{_CONSENT}.communications.{i}"
        if not isinstance(item, dict):
            raise ValidationFailed({path: ["Must be an object."]})
        sub_id = _subscription_id(item.get("subscriptionTypeId"), f"{path}.subscriptionTypeId")
        purpose = mapping.get(sub_id, MARKETING)
        words = _wording(item.get("text"), f"{path}.text")
        _add(found, f"hubspot:sub{sub_id}:{purpose}:{_digest(words)}", item.get("value"), purpose, words)
    return found


def read_notices(options: object, source: Source) -> tuple[Notice, ...]:
    """The legitimate-interest notice shown, if any: its words, basis and purpose, checked.

    Refused (422) when it cannot be recorded as shown, like a consent item's wording.
    """
    if not isinstance(options, dict) or options.get("legitimateInterest") is None:
        return ()
    item = options["legitimateInterest"]
    if not isinstance(item, dict):
        raise ValidationFailed({_INTEREST: ["Must be an object."]})
    sub_id = _subscription_id(item.get("subscriptionTypeId"), f"{_INTEREST}.subscriptionTypeId")
    applies = item.get("value", True)
    if not isinstance(applies, bool):
        raise ValidationFailed({f"{_INTEREST}.value": ["Must be true or false."]})
    basis = item.get("legalBasis")
    if basis is not None and not (isinstance(basis, str) and _PROVIDER_BASIS.fullmatch(basis)):
        raise ValidationFailed({f"{_INTEREST}.legalBasis": ["Must be a HubSpot legal basis name."]})
    purpose = as_dict(source.options.get("subscription_purposes")).get(sub_id, MARKETING)
    return (
        Notice(
            purpose=purpose,
            text=_wording(item.get("text"), f"{_INTEREST}.text"),
            applies=applies,
            provider_basis=basis,
            subscription_type_id=sub_id,
        ),
    )


def _add(
    found: dict[str, tuple[object, str, str]], consent_id: str, value: object, purpose: str, words: str
) -> None:
    if consent_id in found and found[consent_id][0] != value:
        value = False  # the same words ticked and unticked: not granted
    found[consent_id] = (value, purpose, words)


def _wording(value: object, path: str) -> str:
    """The wording, verbatim; refused when PostgreSQL could not store it exactly (NUL, lone surrogates)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed({path: ["The consent wording the person saw is required."]})
    if "\x00" in value or any(unicodedata.category(c) == "Cs" for c in value):
        raise ValidationFailed({path: ["Contains characters that cannot be stored."]})
    return value


def _subscription_id(value: object, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _SUBSCRIPTION_ID.fullmatch(value):
        raise ValidationFailed({path: ["Must be a subscription type id (a whole number)."]})
    return value


def _digest(words: str) -> str:
    """The first 16 hex digits of the wording's SHA-256, as consent_texts.text_sha256 has it (NFC)."""
    return hashlib.sha256(unicodedata.normalize("NFC", words).encode("utf-8")).hexdigest()[:16]


ADAPTER = HubSpotAdapter()
