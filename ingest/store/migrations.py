"""Apply sql/NNN_name.sql in order, once each, in transactions, under an advisory lock.

Before that, wait for the database (it may still be starting): `connect_when_up`.

The ledger (public.ingest_migrations) records each file's sha256: an applied file that
changed is refused (MigrationChanged), never silently skipped. `describe` prints the
migrated schema in the normalised form of sql/schema.sql (tests/test_migrations.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from ingest.errors import ConfigError, Unavailable
from ingest.store.connection import Conn

log = structlog.get_logger("ingest.migrations")

# How long `ingest serve` and `ingest migrate` wait for the database at start.
DB_WAIT_ENV = "INGEST_DB_WAIT_SECONDS"
DEFAULT_DB_WAIT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 5.0  # one attempt: a server that accepts TCP but never answers
_RETRY_DELAY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # then every 5 s
# "Not up (yet)": refused, unreachable, starting up, shutting down, or full.
_NOT_UP = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
)

# pg_advisory_lock key: any fixed 64-bit number; "ingest" in ASCII.
MIGRATION_LOCK_KEY = 0x696E67657374
_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str
    checksum: str = ""  # sha256 of the file's bytes; from the text when built by hand

    def __post_init__(self) -> None:
        if not self.checksum:
            object.__setattr__(self, "checksum", hashlib.sha256(self.sql.encode("utf-8")).hexdigest())

    @property
    def filename(self) -> str:
        """The file's name in sql/."""
        return f"{self.version:03d}_{self.name}.sql"


class MigrationChanged(ConfigError):
    """An applied migration file differs from the one recorded: restore it, add a new one."""


def sql_dir() -> Path:
    """Locate sql/: inside the installed package, else at the checkout's top level."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "sql", package.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("sql/ migrations not found next to the ingest package")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read every migration file, checking the numbering has no gaps or repeats."""
    directory = directory or sql_dir()
    migrations = []
    for path in sorted(directory.iterdir()):
        match = _FILE_RE.match(path.name)
        if match:
            raw = path.read_bytes()
            sql = raw.decode("utf-8")
            migrations.append(Migration(int(match[1]), match[2], sql, hashlib.sha256(raw).hexdigest()))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations must be numbered 001.. without gaps, found {versions}")
    return migrations


async def applied_versions(conn: Conn) -> set[int]:
    """Return the versions already applied (empty on a fresh database)."""
    exists = await conn.fetchval("SELECT to_regclass('public.ingest_migrations') IS NOT NULL")
    if not exists:
        return set()
    rows = await conn.fetch("SELECT version FROM public.ingest_migrations")
    return {row["version"] for row in rows}


async def migrate(conn: Conn, migrations: list[Migration] | None = None) -> list[int]:
    """Bring the database up to date; return the versions applied now."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now = []
    # Session-level lock: a second replica waits here, then finds nothing to do.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS public.ingest_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                checksum   text
            )
            """
        )
        # A ledger written before checksums were recorded gains the column, then is backfilled.
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = 'public'"
            " AND table_name = 'ingest_migrations' AND column_name = 'checksum')"
        ):
            await conn.execute("ALTER TABLE public.ingest_migrations ADD COLUMN checksum text")
        done = await check_applied(conn, migrations)
        for migration in migrations:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO public.ingest_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration_applied", version=migration.version)
            applied_now.append(migration.version)
        if 6 in done or 6 in applied_now:  # noqa: PLR2004 - the roles exist from migration 006
            await restrict_database(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def check_applied(conn: Conn, migrations: list[Migration]) -> set[int]:
    """Return the applied versions; refuse a changed file; record checksums not yet recorded."""
    rows = await conn.fetch("SELECT version, checksum FROM public.ingest_migrations")
    recorded = {row["version"]: row["checksum"] for row in rows}
    for migration in migrations:
        if migration.version not in recorded:
            continue
        checksum = recorded[migration.version]
        if checksum is None:  # applied by a version of the service that did not record checksums
            await conn.execute(
                "UPDATE public.ingest_migrations SET checksum = $1 WHERE version = $2 AND checksum IS NULL",
                migration.checksum,
                migration.version,
            )
        elif checksum != migration.checksum:
            raise MigrationChanged(
                f"sql/{migration.filename} changed after it was applied (recorded sha256 {checksum[:12]}, "
                f"file {migration.checksum[:12]}): restore it and put the change in a new migration"
            )
    return set(recorded)


# Database-level privileges: nobody connects unless granted, nobody makes temporary tables.
# Run after every migration (and after a database is cloned from a template, which does
# not copy them). format('%I') quotes the database's own name: no input reaches this.
DATABASE_PRIVILEGES = """
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO ingest_runtime, crm_reader', current_database());
END $$
"""


async def restrict_database(conn: Conn) -> None:
    """Take CONNECT and TEMPORARY away from PUBLIC in this database; grant CONNECT to our roles."""
    await conn.execute(DATABASE_PRIVILEGES)


async def is_current(conn: Conn) -> bool:
    """True when every migration file has been applied."""
    wanted = {m.version for m in load_migrations()}
    return wanted <= await applied_versions(conn)


def db_wait_seconds(flag: float | None, environ: Mapping[str, str] | None = None) -> float:
    """The database wait at start: `--wait-for-db`, else INGEST_DB_WAIT_SECONDS, else 60 s."""
    name, value = "--wait-for-db", flag
    if value is None:
        raw = (os.environ if environ is None else environ).get(DB_WAIT_ENV, "").strip()
        if not raw:
            return DEFAULT_DB_WAIT_SECONDS
        name = DB_WAIT_ENV
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a number of seconds, 0 or more")
    return value


async def connect_when_up(dsn: str, wait_seconds: float) -> asyncpg.Connection:
    """Connect, retrying for up to `wait_seconds` while the database is not up; then Unavailable.

    One log line per failed attempt (`database_unavailable_retrying`: the attempt, the
    seconds left, the error's type; never the DSN). A refused login or an unknown
    database is not retried: waiting would not change it.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_seconds
    attempt = 0
    while True:
        attempt += 1
        left = give_up - loop.time()
        try:
            return await asyncpg.connect(dsn, timeout=max(1.0, min(CONNECT_TIMEOUT_SECONDS, left)))
        except _NOT_UP as exc:
            error = type(exc).__name__
        left = give_up - loop.time()
        if left <= 0:
            log.error("database_unavailable_giving_up", attempt=attempt, exc_type=error)
            raise Unavailable from None
        log.warning(
            "database_unavailable_retrying", attempt=attempt, seconds_left=round(left, 1), exc_type=error
        )
        await asyncio.sleep(min(_RETRY_DELAY_SECONDS[min(attempt, len(_RETRY_DELAY_SECONDS)) - 1], left))
