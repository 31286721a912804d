"""Data subject rights: access/export, erasure, objection, confirmed opt-in, retention.

One function per right, each owning its transaction, each writing an audit row.
Shared by the admin API (web/admin.py) and the command line (cli.py).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import asyncpg
from marshmallow import ValidationError

from ingest import normalise
from ingest.config import Config
from ingest.domain import ConsentText
from ingest.errors import InvalidLink, ValidationFailed
from ingest.links import LinkClaim
from ingest.mail import plan as mail_plan
from ingest.pseudonyms import canonical_email, email_key, legacy_email_key, phone_key, same_mailbox
from ingest.store import chats, consent_texts, outbox, pending_consents, requests, subjects, used_links
from ingest.store.connection import Conn, with_retries
from ingest.store.locks import lock_feed

P = ParamSpec("P")
T = TypeVar("T")


def _retried(right: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a right's whole transaction again on a transient failure; then Unavailable.

    A blip, or a deadlock with a writer: retried. Past the retries: a 503 (admin API)
    or the CLI's exit 75.
    """

    @functools.wraps(right)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await with_retries(lambda: right(*args, **kwargs))

    return run


EXPORT_FORMAT = "qualitydesk-ingest/subject-export/v1"


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a request is about: a normalised e-mail and/or phone."""

    email: str | None
    phone: str | None

    @property
    def email_key(self) -> str | None:
        """The canonical key the e-mail is matched by."""
        return canonical_email(self.email) if self.email else None

    def keys(self, pepper: str) -> list[tuple[bytes, str]]:
        """The suppression keys of the identifiers given (and an older spelling's, where it differs)."""
        keys = []
        if self.email:
            keys.append((email_key(pepper, self.email), "email"))
            if (legacy := legacy_email_key(pepper, self.email)) is not None:
                keys.append((legacy, "email"))
        if self.phone:
            keys.append((phone_key(pepper, self.phone), "phone"))
        return keys


def subject_from(config: Config, email: object = None, phone: object = None) -> Subject:
    """Normalise the identifiers of a request; 422 if neither is usable."""
    errors: dict[str, list[str]] = {}
    values: dict[str, str | None] = {"email": None, "phone": None}
    for name, value in (("email", email), ("phone", phone)):
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            errors[name] = ["Not a valid string."]
            continue
        try:
            values[name] = (
                normalise.email(value) if name == "email" else normalise.phone(value, config.default_region)
            )
        except ValidationError as exc:
            errors[name] = [str(m) for m in exc.messages] if isinstance(exc.messages, list) else ["Invalid."]
    if errors:
        raise ValidationFailed(errors)
    if not values["email"] and not values["phone"]:
        raise ValidationFailed({"email": ["Give an e-mail address or a phone number."]})
    return Subject(email=values["email"], phone=values["phone"])


@_retried
async def export(pool: asyncpg.Pool, subject: Subject, pepper: str, actor: str) -> dict[str, Any]:
    """Everything held on the person, as one JSON-ready document (Art. 15, 20)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        contact_ids = await subjects.find_contacts(conn, subject.email_key, subject.phone)
        contacts = await subjects.export_contacts(conn, contact_ids)
        pending = await chats.pending_chats_of(conn, subject.email, subject.phone, contact_ids)
        review = await subjects.review_notes(conn, subject.phone, contact_ids)
        awaiting = await pending_consents.of_contacts(conn, contact_ids)  # grants not yet confirmed
        mails = await outbox.waiting_for(conn, contact_ids)
        keys = subject.keys(pepper)
        for contact_id in contact_ids:
            keys += [k for k in await subjects.contact_keys(conn, [contact_id]) if k not in keys]
        suppressed = set(await subjects.suppressed(conn, [k for k, _ in keys]))
        await requests.complete_requests(conn, "access", [k for k, _ in subject.keys(pepper)])
        await subjects.audit(
            conn, pepper, actor, "export", {"contacts": len(contacts), "pending_chats": len(pending)}
        )
    notice_versions = sorted({s["notice_version"] for c in contacts for s in c["submissions"]})
    return {
        "format": EXPORT_FORMAT,
        "generated_at": datetime.now(UTC).isoformat(),
        "subject": {"email": subject.email, "phone": subject.phone},
        "contacts": contacts,
        "pending_chats": pending,
        "consents_awaiting_confirmation": awaiting,
        "mails_waiting": mails,
        "marketing_suppressed": any(k in suppressed for k, _ in keys),
        "notice_versions": notice_versions,
        # For the privacy officer, not the person: what was left out and why (docs/privacy.md).
        "review": review,
    }


@_retried
async def erase(pool: asyncpg.Pool, subject: Subject, pepper: str, actor: str) -> dict[str, int]:
    """Remove every copy of the person's data in one transaction (Art. 17)."""
    async with pool.acquire() as conn, conn.transaction():
        contact_ids = await subjects.find_contacts(conn, subject.email_key, subject.phone)
        pending = await chats.delete_pending_chats_of(conn, subject.email, subject.phone, contact_ids)
        # The number itself, where it stands beside somebody else's e-mail, is the holder's data.
        # (Before the feed lock: writers lock contacts first, then the feed.)
        phone_values = (
            await subjects.remove_phone_values(conn, subject.phone, contact_ids) if subject.phone else 0
        )
        report = await erase_contacts_locked(conn, contact_ids)
        report["pending_chats"] = pending
        report["phone_values_removed"] = phone_values
        await requests.complete_requests(conn, "erasure", [k for k, _ in subject.keys(pepper)])
        await subjects.audit(conn, pepper, actor, "erase", report)
    return report


async def _lock_for_feed(conn: Any, contact_ids: list[Any]) -> None:
    """Contacts' rows, then the feed lock: the order the writers take them in (no deadlock)."""
    await subjects.lock_contacts(conn, contact_ids)
    await lock_feed(conn)


async def erase_contacts_locked(conn: Any, contact_ids: list[Any]) -> dict[str, int]:
    """Erase these contacts under the feed lock and tell the CRM (the caller owns the transaction)."""
    if not contact_ids:
        return {"contacts": 0, "submissions": 0, "consent_events_unlinked": 0}
    await _lock_for_feed(conn, contact_ids)
    await subjects.add_subject_events(conn, contact_ids, "erased")
    return await subjects.erase_contacts(conn, contact_ids)


@_retried
async def opt_out(pool: asyncpg.Pool, subject: Subject, pepper: str, actor: str) -> dict[str, int]:
    """Record a direct-marketing objection that outlives erasure (Art. 21)."""
    async with pool.acquire() as conn, conn.transaction():
        contact_ids = await subjects.find_contacts(conn, subject.email_key, subject.phone)
        report = await _object(conn, pepper, contact_ids, subject.keys(pepper), source=f"admin:{actor}")
        await requests.complete_requests(conn, "objection", [k for k, _ in subject.keys(pepper)])
        await subjects.audit(conn, pepper, actor, "opt-out", report)
    return report


async def _object(
    conn: Any, pepper: str, contact_ids: list[Any], keys: list[tuple[bytes, str]], source: str
) -> dict[str, int]:
    keys = keys + [k for k in await subjects.contact_keys(conn, contact_ids) if k not in keys]
    new = await subjects.add_suppressions(conn, keys)
    withdrawn = 0
    if contact_ids:
        digest = await consent_texts.ensure_objection_text(conn)
        await _lock_for_feed(conn, contact_ids)
        withdrawn = await subjects.record_consent_for_contacts(
            conn,
            pepper,
            contact_ids,
            consent_texts.OBJECTION_CONSENT_ID,
            "direct_marketing",
            granted=False,
            text_sha256=digest,
            source=source,
        )
        await subjects.add_subject_events(conn, contact_ids, "marketing_opt_out")
    return {"contacts": len(contact_ids), "suppression_entries_added": new, "consent_withdrawals": withdrawn}


@_retried
async def unsubscribe(
    pool: asyncpg.Pool, email_hash: bytes, pepper: str, actor: str = "unsubscribe-link"
) -> dict[str, int]:
    """One-click unsubscribe from a signed link (RFC 8058): an objection by e-mail hash."""
    async with pool.acquire() as conn, conn.transaction():
        contact_ids = await subjects.contacts_by_email_hash(conn, email_hash)
        report = await _object(conn, pepper, contact_ids, [(email_hash, "email")], source=actor)
        await subjects.audit(conn, pepper, actor, "unsubscribe", report)
    return report


@_retried
async def confirm_opt_in(
    pool: asyncpg.Pool,
    config: Config,
    claim: LinkClaim,
    pepper: str,
    *,
    check_only: bool = False,
    language: str | None = None,
) -> dict[str, int]:
    """A confirmed opt-in (the person opened the signed link): lift the suppression, record the grant.

    The link works once, and only if it was issued after the latest objection it would
    lift (InvalidLink otherwise). `check_only`: only that check, in a read-only
    transaction (the GET page, which must change nothing). Grants that waited for this
    confirmation (double opt-in) are recorded as they were worded and asked for; a
    receipt is queued for each contact confirmed, in `language`.
    """
    consent = config.consents.get(claim.consent_id or "")
    if consent is None or claim.issued_at is None:
        raise InvalidLink
    async with pool.acquire() as conn, conn.transaction(readonly=check_only):
        if await used_links.confirm_link_refused(conn, claim.email_hash, claim.digest, claim.issued_at):
            raise InvalidLink
        if check_only:
            return {}
        # First, so that of two concurrent uses the second waits on this key, then fails.
        if not await used_links.use_link(conn, claim.digest, claim.expires_at):
            raise InvalidLink
        contact_ids = await subjects.contacts_by_email_hash(conn, claim.email_hash)
        # The person proved they hold the address: lift the objection recorded for
        # it and for the phone numbers of the same contacts, unless objected to again
        # since the link was issued.
        keys = {claim.email_hash} | {key for key, _ in await subjects.contact_keys(conn, contact_ids)}
        lifted = sum([await subjects.remove_suppression(conn, key, claim.issued_at) for key in sorted(keys)])
        now = datetime.now(UTC)
        waiting = await pending_consents.take(conn, claim.email_hash, consent.consent_id, now)
        await _lock_for_feed(conn, contact_ids)
        if waiting:
            granted = await subjects.record_confirmed(conn, pepper, waiting)
        else:  # a link issued to lift an objection (`ingest confirm-link`): the configured words
            granted = await subjects.record_consent_for_contacts(
                conn,
                pepper,
                contact_ids,
                consent.consent_id,
                consent.purpose,
                granted=True,
                text_sha256=consent.text_sha256,
                source="confirm-link",
            )
        await _queue_receipts(conn, config, waiting, contact_ids, consent, now, language)
        report = {
            "contacts": len(contact_ids),
            "suppression_entries_removed": lifted,
            "consents_granted": granted,
        }
        await subjects.audit(conn, pepper, "confirm-link", "confirm-opt-in", report)
    return report


async def _queue_receipts(
    conn: Conn,
    config: Config,
    waiting: list[asyncpg.Record],
    contact_ids: list[uuid.UUID],
    consent: ConsentText,
    now: datetime,
    language: str | None,
) -> None:
    if not config.mail.receipts:
        return
    # One receipt per address (contacts that share it get one mail), with the words confirmed.
    words = {r["contact_id"]: r for r in waiting}
    mails, seen = [], set()
    for contact_id, email in (await subjects.emails_of(conn, contact_ids)).items():
        if email in seen:
            continue
        seen.add(email)
        row = words.get(contact_id)
        # A consent id's words never change (sync_consent_texts refuses that): these are the ones.
        text_sha256 = row["text_sha256"] if row else consent.text_sha256
        mails.append(
            outbox.Mail(
                kind="receipt",
                recipient=email,
                language=language or config.mail.language,
                details={
                    "consent_id": consent.consent_id,
                    "text": consent.text,
                    "text_sha256": text_sha256,
                    "source": row["source"] if row else "confirm-link",
                    "at": now.isoformat(),
                },
                message_id=mail_plan.message_id(config),
                contact_id=contact_id,
            )
        )
    await outbox.enqueue(conn, mails)


@_retried
async def record_request(pool: asyncpg.Pool, subject: Subject, kind: str, pepper: str, actor: str) -> int:
    """Log a request received outside the API, starting its one-month clock."""
    key = subject.keys(pepper)[0][0]
    async with pool.acquire() as conn, conn.transaction():
        request_id = await requests.open_request(conn, kind, key, actor, datetime.now(UTC))
        await subjects.audit(conn, pepper, actor, "request", {"kind": kind, "request_id": request_id})
    return request_id


@_retried
async def request_once(pool: asyncpg.Pool, subject: Subject, kind: str, pepper: str, actor: str) -> datetime:
    """Open a request unless one of this kind is open for the person already; when it is due."""
    key = subject.keys(pepper)[0][0]
    async with pool.acquire() as conn, conn.transaction():
        due = await requests.open_due(conn, kind, key)
        if due is None:
            request_id = await requests.open_request(conn, kind, key, actor, datetime.now(UTC))
            await subjects.audit(conn, pepper, actor, "request", {"kind": kind, "request_id": request_id})
            due = await requests.open_due(conn, kind, key)
    assert due is not None  # noqa: S101 - opened just above
    return due


async def subject_by_hash(pool: asyncpg.Pool, config: Config, email_hash: bytes) -> Subject | None:
    """The person a signed link names (by the keyed hash of their e-mail), as a stored address has it."""
    async with pool.acquire() as conn:
        emails = await subjects.emails_of(conn, await subjects.contacts_by_email_hash(conn, email_hash))
    if not emails:
        return None
    return subject_from(config, min(emails.values()))


@_retried
async def request_access(
    pool: asyncpg.Pool, config: Config, subject: Subject, pepper: str, language: str
) -> None:
    """Self-service access: mail a single-use link if the address is known; the same work either way.

    Both paths look the address up and write an audit row in one transaction; a known
    one also queues the mail. The caller answers the same page whatever happened.
    """
    async with pool.acquire() as conn, conn.transaction():
        contact_ids = await subjects.find_contacts(conn, subject.email_key, None)
        # To the address stored, never the one typed: a look-alike the canonical key folds
        # into a known contact (`strasse.de` for `straße.de`) must not receive the link.
        stored = await subjects.emails_of(conn, contact_ids)
        mails = [
            outbox.Mail(
                kind="access",
                recipient=address,
                language=language,
                details={"requested": datetime.now(UTC).isoformat()},
                message_id=mail_plan.message_id(config),
                contact_id=contact_id,
            )
            for contact_id, address in stored.items()
            if subject.email and same_mailbox(address, subject.email)
        ]
        await outbox.enqueue(conn, mails)
        await subjects.audit(conn, pepper, "self-service", "access-link-requested", {})


@_retried
async def open_access_link(pool: asyncpg.Pool, claim: LinkClaim, pepper: str) -> None:
    """Use up a mailed self-service link (it works once); InvalidLink if it already was."""
    async with pool.acquire() as conn, conn.transaction():
        if not await used_links.use_link(conn, claim.digest, claim.expires_at):
            raise InvalidLink
        await subjects.audit(conn, pepper, "self-service", "access-link-opened", {})
