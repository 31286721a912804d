"""The service layer: validate, decide purposes and consent, and commit in one transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog
from marshmallow import ValidationError

from ingest import consent, migrations, repository
from ingest.config import Config, Source
from ingest.domain import Envelope, Outcome, RawSubmission, Submission
from ingest.errors import Unavailable, ValidationFailed
from ingest.pseudonyms import delivery_digest, phone_key
from ingest.schemas import CONTACT_REQUIRED, SubmissionSchema, load_submission
from ingest.store.submissions import write_submissions

T = TypeVar("T")
log = structlog.get_logger("ingest.service")


class BatchWriter(Protocol):
    """Something that commits envelopes together (group_commit.GroupCommitWriter)."""

    health: WriteHealth

    async def submit(self, envelope: Envelope, deadline: float | None = None) -> Outcome:
        """Return the envelope's outcome once it is committed (503 by `deadline`, loop time)."""
        ...

    def oldest_waiting(self) -> float | None:
        """The arrival (loop time) of the oldest envelope not yet answered, if any."""
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
    # Our own deadline, enforced by the server: a held lock (lock_timeout) or a
    # statement that ran out of time (statement_timeout, or an operator's cancel).
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
)
PENDING_CONSENTS_KEY = "_consents"  # consent answers gathered from earlier chat pieces
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)  # rides out blips of about two seconds
# The writer's own answer comes this long before the request's deadline, so that the
# answer committed-or-503 is decided by the writer, not by the outer guard (within()).
DEADLINE_MARGIN_SECONDS = 0.1
MIN_ATTEMPT_SECONDS = 0.05  # no attempt is started with less time than this left
RELEASE_TIMEOUT_SECONDS = 2.0  # resetting a pooled connection; past it, the connection is dropped
# SET LOCAL cannot take parameters; set_config(..., true) is the same, parameterised.
# Only a lock wait is bounded by the server: a statement, and the COMMIT, are bounded by
# our own clock (asyncio.timeout_at, which cancels them). A server-side statement_timeout
# would also fire while a COMMIT waits for the synchronous standby, and PostgreSQL then
# reports that COMMIT as done ("canceling wait for synchronous replication"): a 2xx for a
# row on one server only. Cut off by our clock instead, the answer is a 503.
TRANSACTION_TIMEOUTS = "SELECT set_config('lock_timeout', $1, true)"


class WriteHealth:
    """Whether writes are getting through: the last attempt's result (for /readyz)."""

    def __init__(self) -> None:
        self.failing = False  # the last attempt failed or timed out, and none succeeded since

    def succeeded(self) -> None:
        """A write (or /readyz's probe of the write path) committed."""
        self.failing = False

    def failed(self) -> None:
        """A write attempt failed for a database reason or ran out of time."""
        self.failing = True


def _now() -> float:
    return asyncio.get_running_loop().time()


async def with_retries(
    operation: Callable[[], Awaitable[T]],
    delays: tuple[float, ...] = RETRY_DELAYS,
    deadline: float | None = None,
) -> T:
    """Run `operation`, retrying transient database failures; then answer 503.

    With a `deadline` (loop time), no retry starts that could not finish before it.
    """
    for delay in (*delays, None):
        try:
            return await operation()
        except TRANSIENT_ERRORS:
            if delay is None or (deadline is not None and _now() + delay + MIN_ATTEMPT_SECONDS > deadline):
                raise Unavailable from None
            await asyncio.sleep(delay)
    raise Unavailable  # pragma: no cover - the loop always returns or raises


@dataclass(slots=True)
class Bounded:
    """What one bounded transaction needs: the pool, its health record (writes), its release tasks."""

    pool: asyncpg.Pool
    health: WriteHealth | None
    releasing: set[asyncio.Task[None]]


async def bounded_transaction(
    where: Bounded, deadline: float, work: Callable[[asyncpg.pool.PoolConnectionProxy[Any]], Awaitable[T]]
) -> T:
    """One attempt of `work(conn)` in a transaction that cannot outlive `deadline` (loop time).

    The pool wait, every statement and the COMMIT are bounded: a frozen server or a
    held lock ends the attempt with a TimeoutError or a lock/statement timeout (all
    transient). A connection whose exchange was cut off is terminated, never reset:
    a reset on a frozen server would wait as long as the freeze.
    """
    left = deadline - _now()
    if left < MIN_ATTEMPT_SECONDS:
        raise TimeoutError
    try:
        conn = await where.pool.acquire(timeout=left)
    except TRANSIENT_ERRORS:
        if where.health is not None:
            where.health.failed()  # no connection to be had in time: a failed write too
        raise
    transaction = conn.transaction()
    try:
        async with asyncio.timeout_at(deadline):
            await transaction.start()
            await conn.execute(TRANSACTION_TIMEOUTS, str(max(1, int((deadline - _now()) * 1000))))
            result = await work(conn)
            await transaction.commit()
    except BaseException as exc:
        if where.health is not None and isinstance(exc, (*TRANSIENT_ERRORS, asyncio.CancelledError)):
            where.health.failed()
        await _abandon(conn, transaction, exc, deadline)
        _release(where, conn)
        raise
    if where.health is not None:
        where.health.succeeded()
    _release(where, conn)
    return result


async def _abandon(
    conn: asyncpg.pool.PoolConnectionProxy[Any],
    transaction: Any,  # asyncpg's Transaction (not exported for typing)
    exc: BaseException,
    deadline: float,
) -> None:
    """Roll back a failed attempt if the server is answering; otherwise drop the connection."""
    if isinstance(exc, (TimeoutError, asyncio.CancelledError, OSError)) or conn.is_closed():
        conn.terminate()
        return
    try:
        async with asyncio.timeout(max(MIN_ATTEMPT_SECONDS, deadline - _now())):
            await transaction.rollback()
    except BaseException:  # noqa: BLE001 - any doubt about the connection: drop it
        conn.terminate()


def _release(where: Bounded, conn: asyncpg.pool.PoolConnectionProxy[Any]) -> None:
    # The pool resets a connection on release: one more round trip that the answers
    # need not wait for. And a failure there must not look like a failed write: the
    # transaction has committed, and retrying it would store its rows twice.
    task = asyncio.create_task(_release_quietly(where.pool, conn))
    where.releasing.add(task)
    task.add_done_callback(where.releasing.discard)


async def _release_quietly(pool: asyncpg.Pool, conn: asyncpg.pool.PoolConnectionProxy[Any]) -> None:
    try:
        await pool.release(conn, timeout=RELEASE_TIMEOUT_SECONDS)  # past it, asyncpg terminates it
    except Exception as exc:  # noqa: BLE001 - the pool has already dropped the connection
        log.warning("connection_release_failed", exc_type=type(exc).__name__)


_ABANDONED: set[asyncio.Future[Any]] = set()


async def within(deadline: float, work: Awaitable[T]) -> T:
    """Await `work` until `deadline` (loop time); past it, answer 503 and leave it to finish.

    The outer guard of every request that touches the database: whatever `work` is
    stuck in (a frozen server, a lock, a pool slot), the caller gets its answer on
    time. The abandoned work is cancelled, and kept referenced until it has unwound.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - _now()))
    except asyncio.CancelledError:
        _abandon_task(task)
        raise
    if task in done:
        return task.result()
    _abandon_task(task)
    raise Unavailable


def _abandon_task(task: asyncio.Future[Any]) -> None:
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody is waiting for it any more


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
        self.health = writer.health if writer is not None else WriteHealth()
        self._bounded = Bounded(pool, self.health, set())
        self._checks = Bounded(pool, None, self._bounded.releasing)  # reads: not a write's health
        self.deadline_seconds = config.limits.request_deadline_seconds

    def deadline(self) -> float:
        """A deadline (loop time) for a request arriving now."""
        return _now() + self.deadline_seconds

    def not_ready_reason(self) -> str | None:
        """Why writes cannot be committed now (for /readyz), or None."""
        if self.health.failing:
            return "writes_failing"
        oldest = self.writer.oldest_waiting() if self.writer is not None else None
        if oldest is not None and _now() - oldest > self.deadline_seconds:
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
            notices=raw.notices,
        )

    def prepare(self, source: Source, raw: RawSubmission, received_at: datetime) -> Envelope | Outcome:
        """Validate and minimise; return the envelope to commit, or an 'ignored' outcome."""
        submission = self.validate(raw)
        if submission.email is None and submission.phone is None:
            if raw.optional_contact:
                return Outcome("ignored", reason="no_contact_details")
            raise ValidationFailed({"email": [CONTACT_REQUIRED], "phone": [CONTACT_REQUIRED]})
        return self.envelope(source, raw, submission, received_at)

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
                    self._bounded, end, lambda conn: self._accept_piece(conn, source, raw, piece, received_at)
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
            [outcome] = await write_submissions(conn, [envelope], self.pepper)
            return outcome

        return write

    async def _accept_piece(
        self,
        conn: asyncpg.pool.PoolConnectionProxy[Any],
        source: Source,
        raw: RawSubmission,
        piece: Submission,
        received_at: datetime,
    ) -> Outcome:
        """Merge one piece of a chat session (in `conn`'s transaction); commit once e-mail/phone is known."""
        assert raw.session_key is not None  # noqa: S101 - accept() routes only session pieces here
        ttl = timedelta(hours=self.config.limits.pending_chat_ttl_hours)
        session = delivery_digest(self.pepper, source.name, raw.session_key)  # never the provider's id
        digest = delivery_digest(self.pepper, source.name, raw.delivery_id) if raw.delivery_id else None
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


async def _probe(conn: asyncpg.pool.PoolConnectionProxy[Any]) -> bool:
    if not await migrations.is_current(conn):
        return False
    await conn.execute("SELECT id FROM ingest.feed_lock FOR UPDATE")
    return True


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
