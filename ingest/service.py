"""The service layer: validate, decide purposes and consent, and commit in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from ingest import consent
from ingest.chat_sessions import ChatSessions
from ingest.config import Config, Source
from ingest.deadlines import DEADLINE_MARGIN_SECONDS, loop_time
from ingest.domain import Envelope, Outcome, RawSubmission, Submission
from ingest.errors import ValidationFailed
from ingest.leniency import validate
from ingest.mail import plan as mail_plan
from ingest.pseudonyms import delivery_digest, email_key, phone_key
from ingest.schemas import CONTACT_REQUIRED, SubmissionSchema
from ingest.store import ledger, locks, migrations
from ingest.store.connection import Bounded, WriteHealth, bounded_transaction, with_retries
from ingest.store.submissions import write_submissions


class BatchWriter(Protocol):
    """Something that commits envelopes together (group_commit.GroupCommitWriter)."""

    health: WriteHealth

    async def submit(self, envelope: Envelope, deadline: float | None = None) -> Outcome:
        """Return the envelope's outcome once it is committed (503 by `deadline`, loop time)."""
        ...

    def oldest_waiting(self) -> float | None:
        """The arrival (loop time) of the oldest envelope not yet answered, if any."""
        ...


class IngestService:
    """Turns raw submissions into committed rows."""

    def __init__(
        self, config: Config, pool: asyncpg.Pool, pepper: str, writer: BatchWriter | None = None
    ) -> None:
        self.config = config
        self.pool = pool
        self.pepper = pepper
        self.chain_key = ledger.chain_key(pepper)  # the consent chain's HMAC key
        self.writer = writer
        self.schema = SubmissionSchema(config.default_region)  # built once, reused
        self.health = writer.health if writer is not None else WriteHealth()
        self._bounded = Bounded(pool, self.health, set())
        self._checks = Bounded(pool, None, self._bounded.releasing)  # reads: not a write's health
        self.deadline_seconds = config.limits.request_deadline_seconds
        self.chats = ChatSessions(config, pepper, self.envelope)

    def deadline(self) -> float:
        """A deadline (loop time) for a request arriving now."""
        return loop_time() + self.deadline_seconds

    def not_ready_reason(self) -> str | None:
        """Why writes cannot be committed now (for /readyz), or None."""
        if self.health.failing:
            return "writes_failing"
        oldest = self.writer.oldest_waiting() if self.writer is not None else None
        if oldest is not None and loop_time() - oldest > self.deadline_seconds:
            return "writer_stalled"
        return None

    async def check_ready(self, deadline: float) -> bool:
        """Whether the database carries every migration; bounded by `deadline` (loop time).

        While writes are failing it also takes the feed lock, as a write does, in a
        transaction that changes nothing: its success counts as a write getting through,
        so an instance taken out of rotation (receiving nothing to write) can recover.
        """
        if self.health.failing:
            return await bounded_transaction(self._bounded, deadline, _probe)
        return await bounded_transaction(self._checks, deadline, migrations.is_current)

    def validate(self, raw: RawSubmission) -> Submission:
        """Validate and minimise the raw fields, as leniently as the delivery's kind allows."""
        return validate(self.schema, raw)

    def envelope(
        self, source: Source, raw: RawSubmission, submission: Submission, received_at: datetime
    ) -> Envelope:
        """Attach provenance, purposes, consent decisions and the mails they cause to a valid submission."""
        decisions = consent.decide(self.config, source, raw)
        recorded, waiting, mails = mail_plan.plan(self.config, source, submission, decisions, received_at)
        # A grant waiting for confirmation adds no purpose yet.
        purposes = consent.purposes_for(self.config, source.purposes, list(recorded))
        return Envelope(
            submission=submission,
            source=source.name,
            channel=source.channel,
            delivery_id=raw.delivery_id,
            notice_version=self.config.notice_version,
            purposes=purposes,
            consents=recorded,
            received_at=received_at,
            new_texts=tuple(d.consent for d in decisions if d.consent.consent_id not in self.config.consents),
            authenticated=source.authenticated,
            notices=raw.notices,
            email_hash=email_key(self.pepper, submission.email) if submission.email else None,
            phone_hash=phone_key(self.pepper, submission.phone) if submission.phone else None,
            delivery_digest=(
                delivery_digest(self.pepper, source.name, raw.delivery_id) if raw.delivery_id else None
            ),
            confirmations=waiting,
            mails=mails,
            language=raw.language or self.config.mail.language,
        )

    def prepare(self, source: Source, raw: RawSubmission, received_at: datetime) -> Envelope | Outcome:
        """Validate and minimise; return the envelope to commit, or an 'ignored' outcome."""
        submission = self.validate(raw)
        if submission.email is None and submission.phone is None:
            if raw.optional_contact:
                return Outcome("ignored", reason="no_contact_details")
            raise ValidationFailed({"email": [CONTACT_REQUIRED], "phone": [CONTACT_REQUIRED]})
        return self.envelope(source, raw, submission, received_at)

    def answers_on_time(self, items: Iterable[object]) -> bool:
        """Whether accepting `items` is answered by its deadline without an outer guard.

        True when every item goes to the group-commit writer (no chat piece, which is
        written in its own transaction): the writer answers each by its deadline,
        committed or 503, and its wait has a backstop of its own. The outer guard
        (`deadlines.within`) costs a task and a wait per request, so it is kept for
        the paths that hold a database connection themselves.
        """
        return self.writer is not None and not any(
            isinstance(item, RawSubmission) and item.session_key is not None for item in items
        )

    async def accept(
        self, source: Source, raw: RawSubmission, received_at: datetime, deadline: float | None = None
    ) -> Outcome:
        """Validate, then commit; returns only after COMMIT, or 503 by `deadline` (loop time)."""
        deadline = self.deadline() if deadline is None else deadline
        if raw.session_key is not None:
            piece = self.validate(raw)
            end = deadline - DEADLINE_MARGIN_SECONDS

            async def attempt() -> Outcome:
                return await bounded_transaction(
                    self._bounded,
                    end,
                    lambda conn: self.chats.accept_piece(conn, source, raw, piece, received_at),
                )

            return await with_retries(attempt, deadline=end)
        prepared = self.prepare(source, raw, received_at)
        if isinstance(prepared, Outcome):
            return prepared
        return await self.commit(prepared, deadline)

    async def commit(self, envelope: Envelope, deadline: float | None = None) -> Outcome:
        """Write the envelope: with the group-commit writer, else in its own transaction."""
        deadline = self.deadline() if deadline is None else deadline
        if self.writer is not None:
            return await self.writer.submit(envelope, deadline)
        end = deadline - DEADLINE_MARGIN_SECONDS

        async def attempt() -> Outcome:
            return await bounded_transaction(self._bounded, end, self._write_one(envelope))

        return await with_retries(attempt, deadline=end)

    def _write_one(
        self, envelope: Envelope
    ) -> Callable[[asyncpg.pool.PoolConnectionProxy[Any]], Awaitable[Outcome]]:
        async def write(conn: asyncpg.pool.PoolConnectionProxy[Any]) -> Outcome:
            [outcome] = await write_submissions(conn, [envelope], self.chain_key)
            return outcome

        return write


async def _probe(conn: asyncpg.pool.PoolConnectionProxy[Any]) -> bool:
    if not await migrations.is_current(conn):
        return False
    await locks.probe_write_path(conn)
    return True
