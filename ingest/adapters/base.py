"""What every adapter is: the contract, its defaults, and the checks every verifier shares (pure)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from ingest.config import FORMATS, Format, Source
from ingest.domain import Channel, InboundRequest, RawSubmission
from ingest.errors import InvalidSignature


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event we understood and deliberately do not store (answered 2xx)."""

    reason: str
    delivery_id: str | None = None
    looks_like_success: bool = False  # honeypot: a bot must not learn it was caught


Item = RawSubmission | Ignored


class Delivery(list[Item]):
    """The items of one delivery, and the configured mapping keys it did not carry.

    `absent_fields` holds config key paths only (`fields.email`,
    `consent_fields.<key>`), never values: intake counts them by source
    (`ingest_mapped_field_absent`), so a renamed provider field is noticed.
    """

    def __init__(self, items: Iterable[Item] = (), absent_fields: Iterable[str] = ()) -> None:
        super().__init__(items)
        self.absent_fields: tuple[str, ...] = tuple(absent_fields)


class Adapter(Protocol):
    """Authenticates a provider's request and extracts raw submissions from it."""

    name: ClassVar[str]

    # What the format needs of a source, as config.FORMATS states it (read, not restated).
    @property
    def channels(self) -> frozenset[Channel]:
        """The channels (form, chat) a source of this format may be."""

    @property
    def needs_secret(self) -> bool:
        """Deliveries are signed or carry a secret."""

    @property
    def needs_origin(self) -> bool:
        """Deliveries come from browsers: the Origin is checked."""

    @property
    def secret_kind(self) -> str:
        """How config checks the secrets: standard_webhooks or shared."""

    content_types: ClassVar[frozenset[str]]
    # Providers that count only one status as delivered (Webflow: 200) get it for
    # every 2xx outcome; None means the DESIGN statuses (201/200/202).
    success_status: ClassVar[int | None]
    # Providers whose deliveries carry a whole conversation or form definition
    # (Intercom, LiveChat, Zendesk, Typeform) need more than the 64 KiB default:
    # a 413 never succeeds on retry. None: [limits] max_body_bytes.
    max_body_bytes: ClassVar[int | None]

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """Raise ConfigError (naming the key) if the source's settings cannot work."""

    def parse(self, source: Source, request: InboundRequest) -> Sequence[Item]:
        """Verify the request on its raw bytes, then extract the items it carries."""


class BaseAdapter:
    """Defaults shared by adapters: JSON bodies, a secret, no per-source checks."""

    name: ClassVar[str] = ""
    content_types: ClassVar[frozenset[str]] = frozenset({"application/json"})
    success_status: ClassVar[int | None] = None
    max_body_bytes: ClassVar[int | None] = None

    @property
    def channels(self) -> frozenset[Channel]:
        """The channels (form, chat) a source of this format may be."""
        return _rules(self.name).channels

    @property
    def needs_secret(self) -> bool:
        """Deliveries are signed or carry a secret (all but html)."""
        return _rules(self.name).needs_secret

    @property
    def needs_origin(self) -> bool:
        """Deliveries come from browsers: the Origin is checked (html)."""
        return _rules(self.name).needs_origin

    @property
    def secret_kind(self) -> str:
        """How config checks the secrets: standard_webhooks or shared."""
        return _rules(self.name).secret_kind

    def check_source(self, source: Source, key: Callable[[str], str]) -> None:
        """Accept any settings by default."""


def _rules(name: str) -> Format:
    return FORMATS[name]


LARGE_DELIVERY_BYTES = 1024 * 1024


def body_limit(adapter: Adapter, source: Source, default: int) -> int:
    """The most a delivery to `source` may carry: its own setting, else its format's, else `default`."""
    if source.max_body_bytes is not None:
        return source.max_body_bytes
    return max(default, adapter.max_body_bytes or 0)


def secret_matches(secrets: Sequence[str], compute: Callable[[bytes], bytes], given: bytes) -> bool:
    """Constant-time check of `given` against the signature under each configured secret."""
    matched = False
    for secret in secrets:
        # No short-circuit: every secret is tried, so timing says nothing of which one.
        matched |= hmac.compare_digest(compute(secret.encode("utf-8")), given)
    return matched


def require(condition: bool) -> None:
    """Raise InvalidSignature unless condition holds."""
    if not condition:
        raise InvalidSignature
