"""Every SQL statement of the write path: literal, parameterised, one small function each."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ingest.domain import ConsentDecision, ConsentText, PurposeRecord

# Statements run on a plain connection or one borrowed from the pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


async def claim_delivery(
    conn: Conn, source: str, delivery_id: str, submission_id: uuid.UUID
) -> uuid.UUID | None:
    """Record the delivery id; return the first submission's id if it was seen before.

    A concurrent transaction holding the same key makes this wait until it
    finishes: then ON CONFLICT sees its row, so a race resolves to one submission.
    """
    inserted = await conn.fetchval(
        """
        INSERT INTO ingest.deliveries (source, delivery_id, submission_id)
        VALUES ($1, $2, $3)
        ON CONFLICT (source, delivery_id) DO NOTHING
        RETURNING submission_id
        """,
        source,
        delivery_id,
        submission_id,
    )
    if inserted is not None:
        return None
    first: uuid.UUID = await conn.fetchval(
        "SELECT submission_id FROM ingest.deliveries WHERE source = $1 AND delivery_id = $2",
        source,
        delivery_id,
    )
    return first


async def upsert_contact_by_email(
    conn: Conn,
    name: str | None,
    email: str,
    phone: str | None,
    email_hash: bytes,
    phone_hash: bytes | None,
    seen_at: datetime,
) -> uuid.UUID:
    """Find or create the contact with this e-mail; newer name/phone win, absent ones keep."""
    contact_id: uuid.UUID = await conn.fetchval(
        """
        INSERT INTO ingest.contacts AS c
               (name, email, phone, email_hash, phone_hash, first_seen_at, last_seen_at)
        VALUES ($1, $2, $3, $4, $5, $6, $6)
        ON CONFLICT (lower(email)) WHERE email IS NOT NULL DO UPDATE
           SET name = COALESCE(EXCLUDED.name, c.name),
               phone = COALESCE(EXCLUDED.phone, c.phone),
               phone_hash = COALESCE(EXCLUDED.phone_hash, c.phone_hash),
               last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at)
        RETURNING contact_id
        """,
        name,
        email,
        phone,
        email_hash,
        phone_hash,
        seen_at,
    )
    return contact_id


async def upsert_contact_by_phone(
    conn: Conn,
    name: str | None,
    phone: str,
    phone_hash: bytes,
    seen_at: datetime,
) -> uuid.UUID:
    """Find the most recent contact with this phone, else create a phone-only contact."""
    existing: uuid.UUID | None = await conn.fetchval(
        """
        UPDATE ingest.contacts
           SET name = COALESCE($2, name), last_seen_at = GREATEST(last_seen_at, $3)
         WHERE contact_id = (SELECT contact_id FROM ingest.contacts WHERE phone = $1
                              ORDER BY last_seen_at DESC LIMIT 1)
        RETURNING contact_id
        """,
        phone,
        name,
        seen_at,
    )
    if existing is not None:
        return existing
    contact_id: uuid.UUID = await conn.fetchval(
        """
        INSERT INTO ingest.contacts AS c (name, phone, phone_hash, first_seen_at, last_seen_at)
        VALUES ($1, $2, $3, $4, $4)
        ON CONFLICT (phone) WHERE email IS NULL DO UPDATE
           SET name = COALESCE(EXCLUDED.name, c.name),
               last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at)
        RETURNING contact_id
        """,
        name,
        phone,
        phone_hash,
        seen_at,
    )
    return contact_id


# pg_advisory_xact_lock key serialising the tail of writers to the crm feeds ("crmfeed").
FEED_LOCK_KEY = 0x63726D66656564


async def lock_feed(conn: Conn) -> None:
    """Hold the feed lock until COMMIT, so feed sequence numbers become visible in order."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK_KEY)


async def insert_submission(
    conn: Conn,
    submission_id: uuid.UUID,
    contact_id: uuid.UUID,
    source: str,
    channel: str,
    message: str | None,
    notice_version: str,
    received_at: datetime,
) -> None:
    """Insert the submission row."""
    await conn.execute(
        """
        INSERT INTO ingest.submissions
               (submission_id, contact_id, source, channel, message, notice_version, received_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        submission_id,
        contact_id,
        source,
        channel,
        message,
        notice_version,
        received_at,
    )


async def insert_purposes(conn: Conn, submission_id: uuid.UUID, purposes: Sequence[PurposeRecord]) -> None:
    """Record each purpose with its lawful basis and retention."""
    await conn.execute(
        """
        INSERT INTO ingest.submission_purposes (submission_id, purpose, lawful_basis, retention_days)
        SELECT $1, p.purpose, p.basis, p.days
          FROM unnest($2::text[], $3::text[], $4::int[]) AS p(purpose, basis, days)
        """,
        submission_id,
        [p.purpose for p in purposes],
        [p.lawful_basis for p in purposes],
        [p.retention_days for p in purposes],
    )


async def ensure_consent_texts(conn: Conn, texts: Sequence[ConsentText]) -> list[str]:
    """Store consent texts once; return the ids whose stored wording differs."""
    rows = await conn.fetch(
        """
        WITH given AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                       AS g(consent_id, purpose, text, text_sha256)
        ), inserted AS (
            INSERT INTO ingest.consent_texts (consent_id, purpose, text, text_sha256)
            SELECT consent_id, purpose, text, text_sha256 FROM given
            ON CONFLICT (consent_id) DO NOTHING
        )
        SELECT g.consent_id
          FROM given g JOIN ingest.consent_texts t USING (consent_id)
         WHERE t.text_sha256 <> g.text_sha256 OR t.purpose <> g.purpose
        """,
        [t.consent_id for t in texts],
        [t.purpose for t in texts],
        [t.text for t in texts],
        [t.text_sha256 for t in texts],
    )
    return [row["consent_id"] for row in rows]


async def insert_consent_events(
    conn: Conn,
    contact_id: uuid.UUID,
    submission_id: uuid.UUID | None,
    decisions: Sequence[ConsentDecision],
    source: str,
    notice_version: str | None,
    recorded_at: datetime,
) -> None:
    """Append one consent event per decision."""
    await conn.execute(
        """
        INSERT INTO ingest.consent_events
               (contact_id, submission_id, consent_id, purpose, granted, text_sha256,
                source, notice_version, recorded_at)
        SELECT $1, $2, d.consent_id, d.purpose, d.granted, d.sha, $6, $7, $8
          FROM unnest($3::text[], $4::text[], $5::bool[], $9::text[])
               WITH ORDINALITY AS d(consent_id, purpose, granted, sha, n)
         ORDER BY d.n
        """,
        contact_id,
        submission_id,
        [d.consent.consent_id for d in decisions],
        [d.consent.purpose for d in decisions],
        [d.granted for d in decisions],
        source,
        notice_version,
        recorded_at,
        [d.consent.text_sha256 for d in decisions],
    )


async def notify_submission(conn: Conn, submission_id: uuid.UUID) -> None:
    """Queue the crm_submission notification; PostgreSQL delivers it at COMMIT."""
    await conn.execute("SELECT pg_notify('crm_submission', $1)", str(submission_id))


async def ping(conn: Conn) -> bool:
    """True when the database answers."""
    return bool(await conn.fetchval("SELECT true"))


async def lock_pending_chat(
    conn: Conn, source: str, session_key: str, expires_at: datetime
) -> asyncpg.Record:
    """Create or lock this session's pending row (an expired one starts afresh).

    One statement, so two pieces of a new session arriving together cannot both
    see "no row": the second waits for the first's lock, then sees its pieces.
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        INSERT INTO ingest.pending_chats AS p (source, session_key, expires_at)
        VALUES ($1, $2, $3)
        ON CONFLICT (source, session_key) DO UPDATE
           SET fields = CASE WHEN p.expires_at <= now() THEN '{}'::jsonb ELSE p.fields END,
               submission_id = CASE WHEN p.expires_at <= now() THEN NULL ELSE p.submission_id END,
               expires_at = CASE WHEN p.expires_at <= now() THEN EXCLUDED.expires_at ELSE p.expires_at END
        RETURNING fields::text AS fields, submission_id
        """,
        source,
        session_key,
        expires_at,
    )
    if row is None:  # pragma: no cover - INSERT .. ON CONFLICT DO UPDATE always returns the row
        raise RuntimeError("pending chat row missing")
    return row


async def find_delivery(conn: Conn, source: str, delivery_id: str) -> uuid.UUID | None:
    """The submission a delivery id already produced, if any."""
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT submission_id FROM ingest.deliveries WHERE source = $1 AND delivery_id = $2",
        source,
        delivery_id,
    )
    return found


async def save_pending_chat(
    conn: Conn, source: str, session_key: str, fields_json: str, submission_id: uuid.UUID | None
) -> None:
    """Store the pieces gathered so far (or, once committed, the submission id only)."""
    await conn.execute(
        """
        UPDATE ingest.pending_chats
           SET fields = $3::jsonb, submission_id = COALESCE(submission_id, $4)
         WHERE source = $1 AND session_key = $2
        """,
        source,
        session_key,
        fields_json,
        submission_id,
    )


async def delete_expired_pending_chats(conn: Conn) -> int:
    """Remove pending chat pieces past their expiry; return how many."""
    result: str = await conn.execute("DELETE FROM ingest.pending_chats WHERE expires_at <= now()")
    return int(result.rsplit(maxsplit=1)[-1])


async def update_contact_of_submission(
    conn: Conn,
    submission_id: uuid.UUID,
    name: str | None,
    phone: str | None,
    phone_hash: bytes | None,
    seen_at: datetime,
) -> None:
    """Fill in a name or phone that arrived after a chat became a submission."""
    await conn.execute(
        """
        UPDATE ingest.contacts c
           SET name = COALESCE($2, c.name),
               phone = COALESCE(c.phone, $3),
               phone_hash = COALESCE(c.phone_hash, $4),
               last_seen_at = GREATEST(c.last_seen_at, $5)
          FROM ingest.submissions s
         WHERE s.submission_id = $1 AND c.contact_id = s.contact_id
        """,
        submission_id,
        name,
        phone,
        phone_hash,
        seen_at,
    )


async def fill_submission_message(conn: Conn, submission_id: uuid.UUID, message: str) -> None:
    """Give a chat submission its first visitor message when the contact details came first."""
    await conn.execute(
        "UPDATE ingest.submissions SET message = $2 WHERE submission_id = $1 AND message IS NULL",
        submission_id,
        message,
    )
