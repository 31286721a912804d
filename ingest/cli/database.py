"""Where a command's database is: DATABASE_URL, or the embedded server for the command's duration.

And the pepper that goes with it: INGEST_PEPPER, or on the embedded database a kept
development pepper. A command that reads stored data refuses a database that is not there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import structlog

from ingest.embedded import development_pepper, embedded_server, has_database
from ingest.errors import ConfigError
from ingest.mail.mailer import MAIL_DIR_ENV
from ingest.secrets import check_pepper as check_pepper_value
from ingest.store import migrations
from ingest.store.settings import check_pepper

log = structlog.get_logger("ingest.cli")


def require_embedded_database(data_dir: Path) -> None:
    """Without DATABASE_URL, a command that reads stored data needs the embedded database to exist.

    Creating an empty one would answer an access request with "nothing stored".
    """
    if not has_database(data_dir):
        raise ConfigError(
            f"no database: DATABASE_URL is not set and {data_dir.resolve()} holds no embedded database; "
            "set DATABASE_URL, run from the directory where `ingest serve` keeps .ingest-data, "
            "or name it before the command: `ingest --data-dir DIR <command> ...`"
        )


@contextlib.contextmanager
def _stop_on_hangup() -> Iterator[None]:
    """SIGHUP (the terminal closed) and SIGTERM end the command through its `with` blocks.

    By default both kill the process on the spot, and the embedded server under it was
    left running. A server loop that handles SIGTERM itself (graceful shutdown) gets
    SIGHUP as a SIGTERM.
    """

    def hang_up(_signum: int, _frame: object) -> None:
        signal.raise_signal(signal.SIGTERM)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)}
    signal.signal(signal.SIGHUP, hang_up)
    if previous[signal.SIGTERM] == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def database_url(data_dir: Path, *, existing: bool = False) -> Iterator[tuple[str, bool]]:
    """DATABASE_URL if set; otherwise an embedded server for the duration. Yields (dsn, embedded).

    `existing`: the embedded database must already exist (commands that read stored data).
    """
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        yield dsn, False
        return
    if existing:
        require_embedded_database(data_dir)
    with _stop_on_hangup(), embedded_server(data_dir) as server:
        if server.started:
            log.info("embedded_postgres_started", data_dir=str(data_dir))
        else:
            log.info("embedded_postgres_attached", data_dir=str(data_dir))
        # The DSN names a local socket directory and no password: safe to show so
        # that psql or a CRM can connect.
        print(f"embedded PostgreSQL: {server.dsn}", file=sys.stderr)
        # Mails (no SMTP configured) go to files beside the database, unless told otherwise;
        # the served workers inherit the environment.
        os.environ.setdefault(MAIL_DIR_ENV, str((data_dir / "mail").resolve()))
        yield server.dsn, True


def resolve_pepper(embedded: bool, data_dir: Path, *, create: bool = True) -> str:
    """INGEST_PEPPER, or a kept development pepper on the embedded database (made if `create`)."""
    pepper = os.environ.get("INGEST_PEPPER", "").strip()
    if pepper:
        check_pepper_value(pepper)
        return pepper
    if embedded:
        return development_pepper(data_dir, create=create)
    raise ConfigError("INGEST_PEPPER: required (the secret key of the suppression hashes)")


async def run_migrations(dsn: str, wait_for_db: float | None = None) -> list[int]:
    """Connect (waiting `--wait-for-db` / INGEST_DB_WAIT_SECONDS for the database), apply migrations."""
    conn = await migrations.connect_when_up(dsn, migrations.db_wait_seconds(wait_for_db))
    try:
        return await migrations.migrate(conn)
    finally:
        await conn.close()


async def wait_for_database(dsn: str, wait_for_db: float | None = None) -> None:
    """Wait (`--wait-for-db` / INGEST_DB_WAIT_SECONDS) until the database takes a connection."""
    conn = await migrations.connect_when_up(dsn, migrations.db_wait_seconds(wait_for_db))
    await conn.close()


@contextlib.asynccontextmanager
async def open_pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool for one command, closed at the end."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def with_database(args: argparse.Namespace, work: Callable[[asyncpg.Pool, str], Awaitable[int]]) -> int:
    """Run `work(pool, pepper)` against DATABASE_URL or the existing embedded database (migrated)."""
    with database_url(args.data_dir, existing=True) as (dsn, embedded):
        pepper = resolve_pepper(embedded, args.data_dir, create=False)
        if embedded:
            asyncio.run(run_migrations(dsn))

        async def run() -> int:
            async with open_pool(dsn) as pool:
                async with pool.acquire() as conn:
                    await check_pepper(conn, pepper)
                return await work(pool, pepper)

        return asyncio.run(run())
