"""Migrations: applied in order from an empty database, once, safely from two replicas at once."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import asyncpg
import pytest

from ingest.store import migrations, schema


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


async def test_the_migrated_database_is_the_declared_schema(db):
    # sql/schema.sql declares what the migrations produce; regenerate it (see ingest/store/schema.py)
    # with a new migration and review the diff.
    declared = (migrations.sql_dir() / "schema.sql").read_text(encoding="utf-8")
    described = await schema.describe(db)
    assert described.splitlines() == declared.splitlines()


async def test_the_dead_submissions_xid_column_is_gone(db):
    columns = await db.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'ingest' AND table_name = 'submissions'"
    )
    assert "xid" not in {r["column_name"] for r in columns}
    assert "seq" in {r["column_name"] for r in columns}


async def test_an_applied_migration_that_changed_is_refused_and_nothing_runs(empty_db):
    files = migrations.load_migrations()
    conn = await asyncpg.connect(empty_db)
    try:
        await migrations.migrate(conn, files[:3])
        edited = dataclasses.replace(files[1], sql=files[1].sql + "\n-- edited after it ran\n", checksum="")
        with pytest.raises(migrations.MigrationChanged, match=r"sql/002_pending_chats\.sql changed"):
            await migrations.migrate(conn, [files[0], edited, *files[2:]])
        assert await migrations.applied_versions(conn) == {1, 2, 3}  # nothing after the refusal
        assert await migrations.migrate(conn) == list(range(4, len(files) + 1))  # restored: goes on
    finally:
        await conn.close()


async def test_a_ledger_without_checksums_gains_them_from_the_files(empty_db):
    # A database migrated before checksums were recorded: they are filled in, nothing re-runs.
    files = migrations.load_migrations()
    conn = await asyncpg.connect(empty_db)
    try:
        await migrations.migrate(conn)
        await conn.execute("ALTER TABLE public.ingest_migrations DROP COLUMN checksum")
        assert await migrations.migrate(conn) == []
        recorded = dict(await conn.fetch("SELECT version, checksum FROM public.ingest_migrations"))
        assert recorded == {m.version: m.checksum for m in files}
        assert (
            recorded[1] == hashlib.sha256((migrations.sql_dir() / "001_initial.sql").read_bytes()).hexdigest()
        )
    finally:
        await conn.close()
