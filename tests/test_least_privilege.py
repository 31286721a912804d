"""Least privilege: what the runtime role and crm_reader can and cannot do, and the pepper's fingerprint."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from ingest import retention
from ingest.errors import ConfigError
from ingest.store.startup import sync_consent_texts
from ingest.web.keys import POOL
from tests.support import ADMIN_TOKEN, ORIGIN, PEPPER

FORM = {"name": "Maija", "email": "maija@example.fi", "message": "hi", "marketing": "on"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OLD_FEED_LOCK_KEY = 0x63726D66656564  # the advisory lock key the service used to rely on
OLD_PURGE_LOCK_KEY = 0x7075726765


@pytest.fixture
async def runtime(db):
    """The test connection acting as the service's runtime role."""
    await db.execute("SET ROLE ingest_runtime")
    yield db
    await db.execute("RESET ROLE")


@pytest.fixture
async def reader(db):
    """The test connection acting as crm_reader."""
    await db.execute("SET ROLE crm_reader")
    yield db
    await db.execute("RESET ROLE")


async def _submit(client) -> None:
    response = await client.post(
        "/v1/forms/website-contact", data=FORM, headers={"Origin": ORIGIN, "Accept": "application/json"}
    )
    assert response.status == 201


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ingest.consent_events SET granted = true",
        "DELETE FROM ingest.consent_events",
        "TRUNCATE ingest.consent_events",
        "ALTER TABLE ingest.consent_events DISABLE TRIGGER consent_events_append_only",
        "UPDATE ingest.audit_log SET action = 'export'",
        "DELETE FROM ingest.audit_log",
        "TRUNCATE ingest.audit_log",
        "ALTER TABLE ingest.audit_log DISABLE TRIGGER USER",
        "TRUNCATE ingest.contacts",
        "DROP TABLE ingest.deliveries",
        "CREATE TABLE ingest.mine (x int)",
        "ALTER TABLE ingest.contacts ADD COLUMN x int",
        "CREATE TEMP TABLE scratch (x int)",
    ],
)
async def test_the_runtime_role_cannot_rewrite_the_ledgers_or_change_the_schema(client, runtime, statement):
    await _submit(client)
    await client.post("/v1/subjects/opt-out", json={"email": "maija@example.fi"}, headers=ADMIN)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await runtime.execute(statement)


async def test_the_whole_service_runs_as_the_runtime_role(client, db):
    # The client fixture connects as a login role that is only a member of ingest_runtime.
    await _submit(client)
    await client.post("/v1/subjects/opt-out", json={"email": "maija@example.fi"}, headers=ADMIN)
    response = await client.get("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    assert response.status == 200
    response = await client.delete("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    assert response.status == 200
    roles = await db.fetch(
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database() AND usename <> current_user"
    )
    assert {r["usename"] for r in roles} <= {"ingest_test_app"}
    assert await db.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'ingest_test_app'") is False


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TEMP TABLE scratch (x int)",
        "SELECT lo_from_bytea(0, 'x'::bytea)",
        "SELECT lo_create(0)",
        "SELECT id FROM ingest.feed_lock FOR UPDATE",
        "UPDATE ingest.leases SET until = 'infinity'",
        "SELECT * FROM ingest.settings",
    ],
)
async def test_crm_reader_cannot_lock_write_or_stall(reader, statement):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await reader.execute(statement)


async def test_an_advisory_lock_taken_by_crm_reader_stalls_neither_intake_nor_the_purge(client, db, db_dsn):
    # The service used these advisory keys; any role that connects can take an advisory lock.
    holder = await asyncpg.connect(db_dsn)
    await holder.execute("SET ROLE crm_reader")
    await holder.execute(
        "SELECT pg_advisory_lock($1), pg_advisory_lock($2)", OLD_FEED_LOCK_KEY, OLD_PURGE_LOCK_KEY
    )
    try:
        started = time.monotonic()
        await asyncio.wait_for(_submit(client), timeout=10)
        assert time.monotonic() - started < 5
        report = await retention.purge(client.app[POOL], datetime.now(UTC), "test", PEPPER)
        assert "skipped_locked" not in report
        assert await db.fetchval("SELECT last_done_at IS NOT NULL FROM ingest.leases WHERE name = 'purge'")
    finally:
        await holder.close()


async def test_a_service_started_with_another_pepper_is_refused_naming_the_variable(client, app_dsn, config):
    await _submit(client)  # the first start recorded the pepper's fingerprint
    pool = await asyncpg.create_pool(app_dsn, min_size=1, max_size=1)
    try:
        await sync_consent_texts(pool, config, PEPPER)  # the same pepper starts
        with pytest.raises(ConfigError, match="INGEST_PEPPER"):
            await sync_consent_texts(pool, config, "another-pepper-of-32-characters-or-more")
    finally:
        await pool.close()


async def test_a_right_exercised_without_an_open_request_leaves_no_request_row(client, db):
    await _submit(client)
    await client.get("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    await client.delete("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    assert await db.fetchval("SELECT count(*) FROM ingest.subject_requests") == 0
