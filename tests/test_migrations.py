"""Migrations: applied in order from an empty database, once, safely from two replicas at once."""

from __future__ import annotations

import asyncio

import asyncpg

from ingest import migrations


async def test_every_migration_applies_to_an_empty_database_one_step_at_a_time(empty_db):
    # "Stairway": each step alone, in order, on top of the previous ones.
    files = migrations.load_migrations()
    conn = await asyncpg.connect(empty_db)
    try:
        for step in range(1, len(files) + 1):
            assert await migrations.migrate(conn, files[:step]) == [step]
        assert await migrations.is_current(conn)
        assert await migrations.migrate(conn) == []
    finally:
        await conn.close()


async def test_two_replicas_migrating_at_once_apply_each_migration_once(empty_db):
    conns = [await asyncpg.connect(empty_db) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrations.migrate(c) for c in conns))
        applied = sorted(v for result in results for v in result)
        assert applied == [m.version for m in migrations.load_migrations()]
        assert await conns[0].fetchval("SELECT count(*) FROM public.ingest_migrations") == len(applied)
    finally:
        for conn in conns:
            await conn.close()


async def test_the_migrated_schema_has_the_crm_views_and_role(db):
    views = await db.fetch("SELECT table_name FROM information_schema.views WHERE table_schema = 'crm'")
    assert {r["table_name"] for r in views} >= {"contacts", "submissions", "consents"}
    assert await db.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'crm_reader'") is False


def test_migration_files_are_numbered_without_gaps():
    versions = [m.version for m in migrations.load_migrations()]
    assert versions == list(range(1, len(versions) + 1))
