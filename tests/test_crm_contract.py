"""The CRM read contract: crm_reader reads the crm views and nothing else, and writes nothing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support import ORIGIN

FORM = {"name": "Maija", "email": "maija@example.fi", "message": "hi", "marketing": "on"}


@pytest.fixture
async def reader(db):
    """The test connection acting as crm_reader for the rest of the test."""
    await db.execute("SET ROLE crm_reader")
    yield db
    await db.execute("RESET ROLE")


async def test_crm_reader_can_read_every_view(client, reader):
    await client.post(
        "/v1/forms/website-contact", data=FORM, headers={"Origin": ORIGIN, "Accept": "application/json"}
    )
    contact = await reader.fetchrow("SELECT * FROM crm.contacts")
    assert contact["email"] == "maija@example.fi"
    assert contact["marketing_allowed"] is True
    submission = await reader.fetchrow("SELECT * FROM crm.submissions")
    assert submission["contact_id"] == contact["contact_id"]
    assert submission["purposes"] == ["contact", "customer_relationship", "direct_marketing"]
    consent = await reader.fetchrow("SELECT * FROM crm.consents")
    assert consent["granted"] is True


@pytest.mark.parametrize(
    "table",
    [
        "ingest.contacts",
        "ingest.submissions",
        "ingest.consent_events",
        "ingest.deliveries",
        "ingest.suppressions",
        "ingest.consent_texts",
        "public.ingest_migrations",
    ],
)
async def test_crm_reader_cannot_read_the_private_tables(reader, table):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await reader.fetch(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names


async def test_crm_reader_can_read_every_crm_view_and_no_relation_outside_crm(reader, db):
    # Driven by the catalog, so a table added by a later migration is covered too.
    relations = await db.fetch(
        """
        SELECT n.nspname AS schema, c.relname AS name FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'v', 'm', 'p', 'S') AND n.nspname IN ('ingest', 'public', 'crm')
        """
    )
    outside = [r for r in relations if r["schema"] != "crm"]
    assert {r["name"] for r in outside} >= {"contacts", "pending_chats", "audit_log", "suppressions"}
    for r in relations:
        query = f'SELECT * FROM "{r["schema"]}"."{r["name"]}" LIMIT 0'  # noqa: S608 - catalog names
        if r["schema"] == "crm":
            await reader.fetch(query)
        else:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.fetch(query)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO crm.contacts (email) VALUES ('x@example.fi')",
        "UPDATE crm.contacts SET name = 'x'",
        "DELETE FROM crm.submissions",
        "CREATE TABLE crm.mine (x int)",
        "CREATE TABLE public.mine (x int)",
    ],
)
async def test_crm_reader_cannot_write(reader, statement):
    with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ObjectNotInPrerequisiteStateError)):
        await reader.execute(statement)


async def test_a_notification_follows_each_committed_submission(client, db_dsn):
    listener = await asyncpg.connect(db_dsn)
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("crm_submission", lambda *args: received.put_nowait(args[3]))
    try:
        response = await client.post(
            "/v1/forms/website-contact", data=FORM, headers={"Origin": ORIGIN, "Accept": "application/json"}
        )
        submission_id = (await response.json())["submission_id"]
        assert await asyncio.wait_for(received.get(), timeout=5) == submission_id
    finally:
        await listener.close()


async def test_consent_events_refuse_update_and_delete(client, db):
    await client.post(
        "/v1/forms/website-contact", data=FORM, headers={"Origin": ORIGIN, "Accept": "application/json"}
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE ingest.consent_events SET granted = NOT granted")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("DELETE FROM ingest.consent_events")
