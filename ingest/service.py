"""The service layer: validate, decide purposes and consent, and commit in one transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import asyncpg
from marshmallow import ValidationError

from ingest import consent, repository
from ingest.config import Config, Source
from ingest.domain import Envelope, Outcome, RawSubmission, Submission
from ingest.errors import Unavailable, ValidationFailed
from ingest.pseudonyms import delivery_digest, phone_key
from ingest.schemas import CONTACT_REQUIRED, SubmissionSchema, load_submission
from ingest.store.submissions import write_submissions

T = TypeVar("T")


class BatchWriter(Protocol):
    """Something that commits envelopes together (group_commit.GroupCommitWriter)."""

    async def submit(self, envelope: Envelope) -> Outcome:
        """Return the envelope's outcome once it is committed."""
        ...


# What "the database is unavailable" looks like from asyncpg: the connection
# failed, was cut, the server is starting/stopping, full, or read-only (failover).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.InterfaceError,
    # The protocol lost its footing because the server went away mid-exchange.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)
PENDING_CONSENTS_KEY = "_consents"  # consent answers gathered from earlier chat pieces
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)  # rides out blips of about two seconds


async def with_retries(operation: Callable[[], Awaitable[T]], delays: tuple[float, ...] = RETRY_DELAYS) -> T:
    """Run `operation`, retrying transient database failures; then answer 503."""
    for delay in (*delays, None):
        try:
            return await operation()
        except TRANSIENT_ERRORS:
            if delay is None:
                raise Unavailable from None
            await asyncio.sleep(delay)
    raise Unavailable  # pragma: no cover - the loop always returns or raises


class IngestService:
    """Turns raw submissions into committed rows."""

    def __init__(
        self, config: Config, pool: asyncpg.Pool, pepper: str, writer: BatchWriter | None = None
    ) -> None:
        self.config = config
        self.pool = pool
        self.pepper = pepper
        self.writer = writer
        self.schema = SubmissionSchema(config.default_region)  # built once, reused

    def validate(self, raw: RawSubmission) -> Submission:
        """Validate and minimise the raw fields.

        Chats are lenient: an invalid field is dropped rather than refusing the
        callback (providers retry or disable hooks that fail), so a chat with a
        mistyped e-mail but a good phone still counts. Form providers' deliveries
        (`drop_invalid`) are lenient too, as long as an e-mail or phone survives.
        """
        try:
            return load_submission(self.schema, raw.fields)
        except ValidationError as exc:
            messages = _field_messages(exc)
            if not (raw.optional_contact or raw.drop_invalid):
                raise ValidationFailed(messages) from None
            bad = set(messages)
            if "name" in bad:
                bad |= {"first_name", "last_name"}
            kept = {k: v for k, v in raw.fields.items() if k not in bad}
            try:
                submission = load_submission(self.schema, kept)
            except ValidationError:
                submission = Submission(name=None, email=None, phone=None, message=None)
            if not raw.optional_contact and submission.email is None and submission.phone is None:
                raise ValidationFailed(messages) from None  # says why the contact fields failed
            return submission

    def envelope(
        self, source: Source, raw: RawSubmission, submission: Submission, received_at: datetime
    ) -> Envelope:
        """Attach provenance, purposes and consent decisions to a valid submission."""
        purposes, decisions = consent.decide(self.config, source, raw)
        return Envelope(
            submission=submission,
            source=source.name,
            channel=source.channel,
            delivery_id=raw.delivery_id,
            notice_version=self.config.notice_version,
            purposes=purposes,
            consents=decisions,
            received_at=received_at,
            new_texts=tuple(d.consent for d in decisions if d.consent.consent_id not in self.config.consents),
            authenticated=source.authenticated,
        )

    def prepare(self, source: Source, raw: RawSubmission, received_at: datetime) -> Envelope | Outcome:
        """Validate and minimise; return the envelope to commit, or an 'ignored' outcome."""
        submission = self.validate(raw)
        if submission.email is None and submission.phone is None:
            if raw.optional_contact:
                return Outcome("ignored", reason="no_contact_details")
            raise ValidationFailed({"email": [CONTACT_REQUIRED], "phone": [CONTACT_REQUIRED]})
        return self.envelope(source, raw, submission, received_at)

    async def accept(self, source: Source, raw: RawSubmission, received_at: datetime) -> Outcome:
        """Validate, then commit; returns only after COMMIT."""
        if raw.session_key is not None:
            piece = self.validate(raw)
            return await with_retries(lambda: self._accept_piece(source, raw, piece, received_at))
        prepared = self.prepare(source, raw, received_at)
        if isinstance(prepared, Outcome):
            return prepared
        return await self.commit(prepared)

    async def commit(self, envelope: Envelope) -> Outcome:
        """Write the envelope: with the group-commit writer, else in its own transaction."""
        if self.writer is not None:
            return await self.writer.submit(envelope)
        return await with_retries(lambda: self._commit_once(envelope))

    async def _commit_once(self, envelope: Envelope) -> Outcome:
        async with self.pool.acquire() as conn, conn.transaction():
            [outcome] = await write_submissions(conn, [envelope], self.pepper)
            return outcome

    async def _accept_piece(
        self, source: Source, raw: RawSubmission, piece: Submission, received_at: datetime
    ) -> Outcome:
        """Merge one piece of a chat session; commit once an e-mail or phone is known."""
        assert raw.session_key is not None  # noqa: S101 - accept() routes only session pieces here
        ttl = timedelta(hours=self.config.limits.pending_chat_ttl_hours)
        session = delivery_digest(self.pepper, source.name, raw.session_key)  # never the provider's id
        digest = delivery_digest(self.pepper, source.name, raw.delivery_id) if raw.delivery_id else None
        async with self.pool.acquire() as conn, conn.transaction():
            if digest is not None:
                seen, first = await repository.claim_piece(conn, source.name, digest)
                if seen:
                    if first is None:
                        return Outcome("ignored", reason="duplicate_piece")
                    return Outcome("duplicate", submission_id=first)
            row = await repository.lock_pending_chat(conn, source.name, session, received_at + ttl)
            if row["submission_id"] is not None:
                if digest is not None:
                    await repository.link_piece(conn, source.name, digest, row["submission_id"])
                # Already a submission: a later piece only fills in what is missing.
                if piece.message:
                    await repository.fill_submission_message(conn, row["submission_id"], piece.message)
                await repository.update_contact_of_submission(
                    conn,
                    row["submission_id"],
                    piece.name,
                    piece.phone,
                    phone_key(self.pepper, piece.phone) if piece.phone else None,
                    received_at,
                )
                return Outcome("updated", submission_id=row["submission_id"])
            stored = json.loads(row["fields"])
            merged = merge_pieces(stored, piece)
            # A box ticked in an earlier piece counts when the chat is committed.
            consents = {**stored.get(PENDING_CONSENTS_KEY, {}), **raw.consents}
            if merged.email is None and merged.phone is None:
                pending = asdict(merged) | {PENDING_CONSENTS_KEY: consents}
                await repository.save_pending_chat(conn, source.name, session, json.dumps(pending), None)
                return Outcome("ignored", reason="awaiting_contact_details")
            # The piece's delivery id is claimed above: the submission itself carries none.
            piece_raw = replace(raw, consents=consents, delivery_id=None)
            envelope = self.envelope(source, piece_raw, merged, received_at)
            [outcome] = await write_submissions(conn, [envelope], self.pepper)
            if digest is not None and outcome.submission_id is not None:
                await repository.link_piece(conn, source.name, digest, outcome.submission_id)
            # Keep only the link: the personal pieces now live in the submission.
            await repository.save_pending_chat(conn, source.name, session, "{}", outcome.submission_id)
            return outcome


def merge_pieces(stored: Mapping[str, object], piece: Submission) -> Submission:
    """Newer name/e-mail/phone win; the first visitor message is kept."""

    def text(key: str) -> str | None:
        value = stored.get(key)
        return value if isinstance(value, str) else None

    return Submission(
        name=piece.name or text("name"),
        email=piece.email or text("email"),
        phone=piece.phone or text("phone"),
        message=text("message") or piece.message,
    )


def _field_messages(exc: ValidationError) -> dict[str, list[str]]:
    """Flatten marshmallow's messages to field -> list of strings (no values)."""
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    flat: dict[str, list[str]] = {}
    for name, value in messages.items():
        items = list(value.values()) if isinstance(value, dict) else value
        flat[str(name)] = [str(v) for v in items] if isinstance(items, list) else [str(items)]
    return flat
