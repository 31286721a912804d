"""Apply sql/NNN_name.sql in order, once each, in transactions, under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import structlog

from ingest.repository import Conn

log = structlog.get_logger("ingest.migrations")

# pg_advisory_lock key: any fixed 64-bit number; "ingest" in ASCII.
MIGRATION_LOCK_KEY = 0x696E67657374
_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def sql_dir() -> Path:
    """Locate sql/: inside the installed package, else at the checkout's top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
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
            migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
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
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = await applied_versions(conn)
        for migration in migrations:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO public.ingest_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("migration_applied", version=migration.version)
            applied_now.append(migration.version)
        if 6 in done or 6 in applied_now:  # noqa: PLR2004 - the roles exist from migration 006
            await restrict_database(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


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
