"""Chats whose identity arrives in pieces: kept privately until an e-mail or phone is known."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ingest.domain import RawSubmission
from ingest.service import IngestService
from tests.support import ADMIN_TOKEN, PEPPER, dump_database


@pytest.fixture
async def service(db_dsn, config):
    from ingest.store.startup import sync_consent_texts

    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=10)
    await sync_consent_texts(pool, config)
    yield IngestService(config, pool, PEPPER)
    await pool.close()


def piece(session: str, delivery: str | None = None, **fields: object) -> RawSubmission:
    return RawSubmission(fields=fields, delivery_id=delivery, optional_contact=True, session_key=session)


NOW = datetime.now(UTC)


async def test_pieces_without_contact_details_wait_out_of_the_crm_view(service, config, db):
    source = config.sources["partner-chat"]
    outcome = await service.accept(source, piece("s1", name="Maija"), NOW)
    assert (outcome.status, outcome.reason) == ("ignored", "awaiting_contact_details")
    outcome = await service.accept(source, piece("s1", message="Hello, I need a quote"), NOW)
    assert outcome.status == "ignored"
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 0
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 0


async def test_the_chat_is_committed_with_the_first_message_once_an_email_arrives(service, config, db):
    source = config.sources["partner-chat"]
    await service.accept(source, piece("s1", name="Maija"), NOW)
    await service.accept(source, piece("s1", message="First words"), NOW)
    await service.accept(source, piece("s1", message="Second words"), NOW)
    outcome = await service.accept(source, piece("s1", "d-email", email="maija@example.fi"), NOW)
    assert outcome.status == "created"
    row = await db.fetchrow(
        "SELECT c.name, c.email, s.message, s.channel FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": "Maija",
        "email": "maija@example.fi",
        "message": "First words",
        "channel": "chat",
    }
    # The pieces left the pending store; only the link to the submission stays.
    assert await db.fetchval("SELECT fields::text FROM ingest.pending_chats") == "{}"


async def test_a_later_phone_fills_in_the_contact_without_a_second_submission(service, config, db):
    source = config.sources["partner-chat"]
    first = await service.accept(source, piece("s1", email="maija@example.fi", message="Hi"), NOW)
    later = await service.accept(source, piece("s1", phone="040 123 4567"), NOW)
    assert later.status == "updated"
    assert later.submission_id == first.submission_id
    assert await db.fetchval("SELECT phone FROM crm.contacts") == "+358401234567"
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


async def test_a_redelivered_committing_piece_is_a_duplicate(service, config, db):
    source = config.sources["partner-chat"]
    first = await service.accept(source, piece("s1", "d1", email="maija@example.fi"), NOW)
    again = await service.accept(source, piece("s1", "d1", email="maija@example.fi"), NOW)
    assert (again.status, again.submission_id) == ("duplicate", first.submission_id)


async def test_pieces_arriving_together_are_all_kept(service, config, db):
    source = config.sources["partner-chat"]
    await asyncio.gather(
        service.accept(source, piece("s2", name="Maija"), NOW),
        service.accept(source, piece("s2", message="Hello"), NOW),
    )
    outcome = await service.accept(source, piece("s2", email="m@example.fi"), NOW)
    assert outcome.status == "created"
    row = await db.fetchrow(
        "SELECT c.name, s.message FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {"name": "Maija", "message": "Hello"}


async def test_an_invalid_email_in_a_chat_piece_is_dropped_not_refused(service, config, db):
    source = config.sources["partner-chat"]
    outcome = await service.accept(source, piece("s3", email="not-an-address", name="Maija"), NOW)
    assert outcome.status == "ignored"
    assert "not-an-address" not in await dump_database(db)


async def test_expired_pieces_start_afresh_and_are_purged(service, config, db):
    from ingest.store import chats

    source = config.sources["partner-chat"]
    await service.accept(source, piece("s4", name="Old Name", message="old"), NOW - timedelta(days=2))
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats WHERE expires_at <= now()") == 1
    outcome = await service.accept(source, piece("s4", email="new@example.fi"), NOW)
    assert outcome.status == "created"
    assert await db.fetchval("SELECT name FROM crm.contacts") is None  # the expired name was not used
    await service.accept(source, piece("s5", name="Gone"), NOW - timedelta(days=2))
    assert await chats.delete_expired_pending_chats(db) == 1
    assert "Gone" not in await dump_database(db)


async def test_a_consent_ticked_in_an_earlier_piece_is_recorded_at_commit(service, config, db):
    source = config.sources["partner-chat"]
    early = RawSubmission(
        fields={"name": "Maija"},
        consents={"marketing-email-v1": True},
        optional_contact=True,
        session_key="s6",
    )
    assert (await service.accept(source, early, NOW)).status == "ignored"
    outcome = await service.accept(source, piece("s6", email="maija@example.fi"), NOW)
    assert outcome.status == "created"
    assert await db.fetchval("SELECT granted FROM crm.consents WHERE purpose = 'direct_marketing'") is True
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True


async def test_a_first_message_after_the_contact_details_becomes_the_submissions_message(service, config, db):
    source = config.sources["partner-chat"]
    first = await service.accept(source, piece("s7", email="maija@example.fi"), NOW)
    assert first.status == "created"
    assert await db.fetchval("SELECT message FROM crm.submissions") is None
    await service.accept(source, piece("s7", message="My first words"), NOW)
    await service.accept(source, piece("s7", message="Later words"), NOW)
    assert await db.fetchval("SELECT message FROM crm.submissions") == "My first words"


async def test_a_replayed_piece_after_erasure_stores_nothing_again(client, db, config):
    # A piece that only waited (no contact details) and a later piece that filled the
    # submission: replayed after the person's erasure, neither brings anything back.
    from ingest.web.keys import SERVICE

    service = client.app[SERVICE]
    source = config.sources["partner-chat"]
    now = datetime.now(UTC)
    name_piece = RawSubmission(
        fields={"name": "Maija", "message": "first words"},
        optional_contact=True,
        session_key="s1",
        delivery_id="p1",
    )
    email_piece = RawSubmission(
        fields={"email": "maija@example.fi"}, optional_contact=True, session_key="s1", delivery_id="p2"
    )
    phone_piece = RawSubmission(
        fields={"phone": "040 123 4567"}, optional_contact=True, session_key="s1", delivery_id="p3"
    )
    for piece in (name_piece, email_piece, phone_piece):
        await service.accept(source, piece, now)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await client.delete("/v1/subjects", params={"email": "maija@example.fi"}, headers=admin)
    assert response.status == 200
    outcomes = [await service.accept(source, piece, now) for piece in (name_piece, email_piece, phone_piece)]
    assert [o.status for o in outcomes] == ["ignored", "duplicate", "duplicate"]
    dump = await dump_database(db)
    for value in ("first words", "maija@example.fi", "+358401234567", "Maija"):
        assert value not in dump
