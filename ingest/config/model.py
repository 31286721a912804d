"""What a configuration is: frozen types, the formats and purposes known, consent texts."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.domain import Channel, ConsentText

NOTICE_PURPOSES = (
    "contact",
    "customer_relationship",
    "services",
    "business_development",
    "direct_marketing",
)


LAWFUL_BASES = (
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interest",
)


ADMIN_SCOPES = ("export", "erase", "opt-out", "purge")


CANONICAL_FIELDS = ("name", "first_name", "last_name", "email", "phone", "message")


# The `format` a source may name: one adapter each in ingest.adapters.ADAPTERS (a test keeps
# the two equal), listed here so the format is checked without importing the adapters.
@dataclass(frozen=True, slots=True)
class Format:
    """What a config `format` needs of a source; its adapter (ingest/adapters/) reads the same.

    secret_kind: how the secrets are checked, "standard_webhooks" (whsec_, 24-64 bytes) or
    "shared" (a provider-issued or chosen secret: no placeholder, long enough).
    """

    channels: frozenset[Channel]
    needs_secret: bool = True  # html: browsers cannot hold one; the Origin is checked instead
    needs_origin: bool = False
    secret_kind: str = "shared"  # noqa: S105 - a kind of secret, not a secret


_FORM: frozenset[Channel] = frozenset({"form"})


_CHAT: frozenset[Channel] = frozenset({"chat"})


# Every format, checked here without importing an adapter; ingest/adapters/__init__.py maps
# each to its adapter (a test checks the two agree).
FORMATS: Mapping[str, Format] = {
    "crisp": Format(_CHAT),
    "html": Format(_FORM, needs_secret=False, needs_origin=True),
    "hubspot": Format(_FORM, secret_kind="standard_webhooks"),  # noqa: S106 - a kind, not a secret
    "intercom": Format(_CHAT),
    "jotform": Format(_FORM),
    "json": Format(_FORM | _CHAT, secret_kind="standard_webhooks"),  # noqa: S106 - a kind, not a secret
    "livechat": Format(_CHAT),
    "netlify": Format(_FORM),
    "tally": Format(_FORM),
    "tawkto": Format(_CHAT),
    "typeform": Format(_FORM),
    "webflow": Format(_FORM),
    "zendesk": Format(_CHAT),
}


@dataclass(frozen=True, slots=True)
class Purpose:
    """A purpose of the privacy notice and how long its data may be kept."""

    name: str
    lawful_basis: str
    retention_days: int


@dataclass(frozen=True, slots=True)
class Source:
    """One place submissions come from: a form or a chat integration."""

    name: str
    channel: Channel
    format: str
    purposes: tuple[str, ...]
    secrets: tuple[str, ...] = ()
    # The names in secret_env (no values): `ingest try` and messages name the variable.
    secret_envs: tuple[str, ...] = ()
    allowed_origins: frozenset[str] = frozenset()
    consent_fields: Mapping[str, str] = field(default_factory=dict)
    field_map: Mapping[str, str] = field(default_factory=dict)
    success_url: str | None = None
    error_url: str | None = None
    honeypot_field: str = "_gotcha"
    min_fill_seconds: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    max_body_bytes: int | None = None  # None: the format's default, else [limits] max_body_bytes
    # Deliveries are signed or carry a shared secret (every format but html): only such a
    # source may change a known contact's name or phone (see ingest/store/submissions.py).
    authenticated: bool = True
    # A grant of a double opt-in consent from this source waits for the person to confirm
    # it by a mailed link (ingest/mail/). On by default for sources that cannot prove who
    # sent a delivery (html); a signed partner that confirmed the address itself is exempt.
    double_opt_in: bool = False


@dataclass(frozen=True, slots=True)
class AdminToken:
    """A named admin bearer token: only its SHA-256 is known to the service."""

    name: str
    sha256: bytes
    scopes: frozenset[str]


MAX_BODY_BYTES_CAP = 16 * 1024 * 1024  # a body is held in memory whole


# The documented maxima of the link lifetimes in [limits] (see Limits).
LINK_DAYS_MAXIMUM = {"confirm_link_days": 30, "unsubscribe_link_days": 365}


DEADLINE_RANGE = (0.5, 60.0)  # [limits] request_deadline_seconds, in seconds


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits and batching knobs."""

    max_body_bytes: int = 64 * 1024
    body_timeout_seconds: float = 10.0
    batch_max_rows: int = 200
    batch_max_wait_ms: float = 2.0
    rate_per_client_per_minute: int = 60
    rate_per_source_per_second: int = 500
    max_concurrent_requests: int = 512
    # Per worker, per client address: requests in progress (taken before the body is
    # read, so one address trickling bodies cannot hold the whole worker), and failed
    # authentications (bad signature or secret, or a body refused before it could be
    # checked; admin API: a bad bearer token) before that address gets 429 unread.
    max_concurrent_per_client: int = 32
    auth_failures_per_client_per_minute: int = 60
    pending_chat_ttl_hours: int = 24
    maintenance_interval_seconds: int = 3600
    # Every submission, admin and link request is answered within this long of its
    # arrival: committed, or 503 + Retry-After (DESIGN §8). From 0.5 to 60 seconds.
    request_deadline_seconds: float = 3.0
    # Behind a reverse proxy: how many X-Forwarded-For hops to trust for the client
    # address used by the per-client rate limit (0: the TCP peer).
    trusted_proxy_hops: int = 0
    # Signed links (`ingest confirm-link` / `unsubscribe-link`): the lifetime they get by
    # default, and the longest the service accepts (a link made to last longer is refused).
    # confirm_link_days: default 7, at most 30 (it lifts an objection, so it should not linger);
    # unsubscribe_link_days: default 60, at most 365 (it stays idempotent, but still expires).
    confirm_link_days: int = 7
    unsubscribe_link_days: int = 60


SMTP_SECURITY = ("starttls", "tls", "none")
ERASURE_MODES = ("request", "immediate")


@dataclass(frozen=True, slots=True)
class MailSettings:
    """[mail]: who mails come from, in which language, and how they leave (ingest/mail/)."""

    sender: str = "no-reply@localhost"  # the From: address
    contact: str | None = None  # how the person reaches the controller (receipts)
    language: str = "en"  # fi, sv or en: unless the person's browser prefers another of them
    receipts: bool = True  # a consent receipt after every grant
    access_link_minutes: int = 30  # the self-service link's lifetime
    erasure: str = "request"  # self-service erasure: a request on the one-month clock, or "immediate"
    # No smtp_host: mails are written as .eml files under `directory` (the embedded default).
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)  # from smtp_password_env
    directory: str | None = None
    # The mailer: how often it looks for due mail, how long a sender holds a mail it took
    # (a sender that died frees it then: the mail goes again), the first retry's delay
    # (later ones grow from it, about two days in all).
    poll_seconds: float = 2.0
    lease_seconds: float = 120.0
    first_retry_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration."""

    notice_version: str
    default_region: str
    purposes: Mapping[str, Purpose]
    consents: Mapping[str, ConsentText]
    sources: Mapping[str, Source]
    admin_tokens: tuple[AdminToken, ...]
    limits: Limits
    notice_url: str | None = None
    public_url: str | None = None
    # Who is responsible for the data (GDPR controller), as pages and `ingest ropa` name it.
    controller: str | None = None
    path: str | None = None
    # The consents whose grants need the person's confirmation ([consents.X] double_opt_in,
    # on by default for direct marketing), and how mail reaches the person.
    double_opt_in: frozenset[str] = frozenset()
    mail: MailSettings = field(default_factory=MailSettings)


def consent_text(consent_id: str, purpose: str, text: str) -> ConsentText:
    """Build a content-addressed consent text (NFC-normalised words and their SHA-256)."""
    words = unicodedata.normalize("NFC", text)
    digest = hashlib.sha256(words.encode("utf-8")).hexdigest()
    return ConsentText(consent_id=consent_id, purpose=purpose, text=words, text_sha256=digest)
