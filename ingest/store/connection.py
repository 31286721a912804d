"""Connections and transactions: the connection type, transient failures, retries, bounded attempts.

Every transaction the service runs goes through `bounded_transaction` (one attempt
that cannot outlive its deadline) and `with_retries` (transient failures retried,
then Unavailable: a 503, or the CLI's exit 75).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from ingest.deadlines import loop_time
from ingest.errors import Unavailable

T = TypeVar("T")
log = structlog.get_logger("ingest.store")

# Statements run on a plain connection or one borrowed from the pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


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


RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)  # rides out blips of about two seconds


MIN_ATTEMPT_SECONDS = 0.05  # no attempt is started with less time than this left


RELEASE_TIMEOUT_SECONDS = 2.0  # resetting a pooled connection; past it, the connection is dropped


# SET LOCAL cannot take parameters; set_config(..., true) is the same, parameterised.
# Only a lock wait is bounded by the server: a statement, and the COMMIT, are bounded by
# our own clock (asyncio.timeout_at, which cancels them). A server-side statement_timeout
# would also fire while a COMMIT waits for the synchronous standby, and PostgreSQL then
# reports that COMMIT as done ("canceling wait for synchronous replication"): a 2xx for a
# row on one server only. Cut off by our clock instead, the answer is a 503.
# Set in each attempt, to the time it has left, not once as a connection setting: an
# attempt cut off by our clock drops its connection without a cancel reaching the
# server, and its backend would wait on for a lock (holding the feed lock, stalling
# intake) for as long as a connection-wide lock_timeout allows.
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
            if delay is None or (
                deadline is not None and loop_time() + delay + MIN_ATTEMPT_SECONDS > deadline
            ):
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
    left = deadline - loop_time()
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
            await conn.execute(TRANSACTION_TIMEOUTS, str(max(1, int((deadline - loop_time()) * 1000))))
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
        async with asyncio.timeout(max(MIN_ATTEMPT_SECONDS, deadline - loop_time())):
            await transaction.rollback()
    except BaseException:  # noqa: BLE001 - any doubt about the connection: drop it
        conn.terminate()


def _release(where: Bounded, conn: asyncpg.pool.PoolConnectionProxy[Any]) -> None:
    # Released off the answer's path: a pool that resets its connections (the default
    # does, with one more round trip) must not delay the answers. And a failure there must
    # not look like a failed write: the transaction has committed, and retrying it would
    # store its rows twice.
    task = asyncio.create_task(_release_quietly(where.pool, conn))
    where.releasing.add(task)
    task.add_done_callback(where.releasing.discard)


async def _release_quietly(pool: asyncpg.Pool, conn: asyncpg.pool.PoolConnectionProxy[Any]) -> None:
    try:
        await pool.release(conn, timeout=RELEASE_TIMEOUT_SECONDS)  # past it, asyncpg terminates it
    except Exception as exc:  # noqa: BLE001 - the pool has already dropped the connection
        log.warning("connection_release_failed", exc_type=type(exc).__name__)


async def ping(conn: Conn) -> bool:
    """True when the database answers."""
    return bool(await conn.fetchval("SELECT true"))


def rows_affected(status: str) -> int:
    """The row count of a command status such as 'DELETE 3'."""
    return int(status.rsplit(maxsplit=1)[-1])
