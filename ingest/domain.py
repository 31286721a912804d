"""Small frozen types handed from stage to stage; the type says how far the data has got."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Channel = Literal["form", "chat"]


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """What the web layer hands an adapter: untrusted bytes and headers, nothing of aiohttp."""

    headers: dict[str, str]  # lower-cased names
    query: dict[str, str]
    body: bytes
    content_type: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Notice:
    """The words a person was shown for a purpose processed on legitimate interest (not consent).

    HubSpot's `legalConsentOptions.legitimateInterest`; stored by ingest/store/notices.py.
    """

    purpose: str
    text: str  # verbatim
    applies: bool  # the form's `value`: legitimate interest is relied on for this purpose
    provider_basis: str | None = None  # HubSpot `legalBasis` (LEAD, CUSTOMER)
    subscription_type_id: str | None = None
    lawful_basis: str = "legitimate_interest"


@dataclass(frozen=True, slots=True)
class RawSubmission:
    """Untrusted fields pulled out of a provider payload, before validation.

    Values are whatever the provider sent (strings, numbers, lists); the schema
    decides. `consents` maps a consent id to the person's answer.
    """

    fields: dict[str, object]
    consents: dict[str, object] = field(default_factory=dict)
    delivery_id: str | None = None
    # Consent wording that arrived with the payload (HubSpot legalConsentOptions):
    # consent id -> (purpose, exact text). Config consents need no entry here.
    inline_consent_texts: dict[str, tuple[str, str]] = field(default_factory=dict)
    # True when this is a chat start: no contact details means "ignored", not 422.
    optional_contact: bool = False
    # A form provider's webhook cannot correct a field and never succeeds on retrying
    # a 422: an invalid field is dropped when an e-mail or phone still holds.
    drop_invalid: bool = False
    # Chats whose identity arrives in pieces (Crisp, LiveChat): the provider's
    # session id. Pieces wait in a private pending store until e-mail or phone is known.
    session_key: str | None = None
    # Words shown for a purpose processed on legitimate interest (HubSpot), kept verbatim.
    notices: tuple[Notice, ...] = ()
    # The person's language (fi, sv or en) when the request says it (a browser's
    # Accept-Language on an html source): the mails to them are in it.
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    """Validated, normalised and minimised: only these four personal fields exist."""

    name: str | None
    email: str | None
    phone: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class ConsentText:
    """The exact words a person was shown for one consent item."""

    consent_id: str
    purpose: str
    text: str
    text_sha256: str


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """One consent item shown to the person, and whether they granted it."""

    consent: ConsentText
    granted: bool


@dataclass(frozen=True, slots=True)
class PurposeRecord:
    """A purpose the submission is processed for, with its lawful basis."""

    purpose: str
    lawful_basis: str
    retention_days: int


@dataclass(frozen=True, slots=True)
class MailIntent:
    """A mail a submission causes, queued in its transaction (ingest/store/outbox.py)."""

    kind: Literal["confirm", "receipt"]
    consent: ConsentText
    message_id: str
    # confirm: when the grant waiting for confirmation lapses
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A submission ready to commit: data plus provenance, purposes and consent."""

    submission: Submission
    source: str
    channel: Channel
    delivery_id: str | None
    notice_version: str
    purposes: tuple[PurposeRecord, ...]
    consents: tuple[ConsentDecision, ...]
    received_at: datetime
    # Wording that arrived with the payload (not in config), stored once on first use.
    new_texts: tuple[ConsentText, ...] = ()
    # From a source that authenticates its deliveries: may update a known contact.
    authenticated: bool = True
    # Legitimate-interest notices shown with the submission (ingest/store/notices.py).
    notices: tuple[Notice, ...] = ()
    # The keyed values the store needs, computed once where the envelope is built (the
    # service holds the pepper; the store never sees it): ingest/pseudonyms.py.
    email_hash: bytes | None = None  # of the canonical e-mail key
    phone_hash: bytes | None = None
    delivery_digest: str | None = None  # of (source, delivery_id)
    # Grants that wait for the person to confirm them by mail (double opt-in): not among
    # `consents` until then; and the mails the submission causes, in the person's language.
    confirmations: tuple[ConsentDecision, ...] = ()
    mails: tuple[MailIntent, ...] = ()
    language: str = "en"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one delivery."""

    status: Literal["created", "duplicate", "ignored", "updated"]
    submission_id: uuid.UUID | None = None
    reason: str | None = None
    # Answered like a success to a bot (a filled honeypot, a form sent too fast); nothing
    # stored. Counted and logged as a decoy, never as created.
    decoy: bool = False
