"""Set-based SQL for group commit: one statement per table for a whole batch of submissions.

The caller (group_commit.py) has already de-duplicated the batch: one entry per
delivery id, one contact row per e-mail (lower-cased) or phone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from ingest.repository import Conn


async def claim_deliveries(
    conn: Conn, sources: Sequence[str], delivery_ids: Sequence[str], submission_ids: Sequence[uuid.UUID]
) -> dict[tuple[str, str], uuid.UUID]:
    """Claim delivery ids; return the ones seen before, with their first submission id."""
    claimed = await conn.fetch(
        """
        INSERT INTO ingest.deliveries (source, delivery_id, submission_id)
        SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[])
        ON CONFLICT (source, delivery_id) DO NOTHING
        RETURNING source, delivery_id
        """,
        sources,
        delivery_ids,
        submission_ids,
    )
    new = {(r["source"], r["delivery_id"]) for r in claimed}
    seen = [(s, d) for s, d in zip(sources, delivery_ids, strict=True) if (s, d) not in new]
    if not seen:
        return {}
    rows = await conn.fetch(
        """
        SELECT d.source, d.delivery_id, d.submission_id
          FROM ingest.deliveries d
          JOIN unnest($1::text[], $2::text[]) AS k(source, delivery_id) USING (source, delivery_id)
        """,
        [s for s, _ in seen],
        [d for _, d in seen],
    )
    return {(r["source"], r["delivery_id"]): r["submission_id"] for r in rows}


async def upsert_contacts_by_email(
    conn: Conn,
    names: Sequence[str | None],
    emails: Sequence[str],
    phones: Sequence[str | None],
    email_hashes: Sequence[bytes],
    phone_hashes: Sequence[bytes | None],
    seen: Sequence[datetime],
) -> dict[str, uuid.UUID]:
    """Find or create contacts by e-mail; return lower(email) -> contact id."""
    rows = await conn.fetch(
        """
        INSERT INTO ingest.contacts AS c
               (name, email, phone, email_hash, phone_hash, first_seen_at, last_seen_at)
        SELECT n, e, p, eh, ph, s, s
          FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::timestamptz[])
               AS t(n, e, p, eh, ph, s)
        ON CONFLICT (lower(email)) WHERE email IS NOT NULL DO UPDATE
           SET name = COALESCE(EXCLUDED.name, c.name),
               phone = COALESCE(EXCLUDED.phone, c.phone),
               phone_hash = COALESCE(EXCLUDED.phone_hash, c.phone_hash),
               last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at)
        RETURNING contact_id, lower(email) AS key
        """,
        names,
        emails,
        phones,
        email_hashes,
        phone_hashes,
        seen,
    )
    return {r["key"]: r["contact_id"] for r in rows}


async def upsert_contacts_by_phone(
    conn: Conn,
    names: Sequence[str | None],
    phones: Sequence[str],
    phone_hashes: Sequence[bytes],
    seen: Sequence[datetime],
) -> dict[str, uuid.UUID]:
    """Match each phone to its most recent contact, else create a phone-only one."""
    rows = await conn.fetch(
        """
        WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::timestamptz[]) AS t(n, p, ph, s)
        ), existing AS (
            SELECT DISTINCT ON (c.phone) c.phone, c.contact_id
              FROM ingest.contacts c JOIN input i ON c.phone = i.p
             ORDER BY c.phone, c.last_seen_at DESC
        ), updated AS (
            UPDATE ingest.contacts c
               SET name = COALESCE(i.n, c.name), last_seen_at = GREATEST(c.last_seen_at, i.s)
              FROM existing e JOIN input i ON i.p = e.phone
             WHERE c.contact_id = e.contact_id
            RETURNING c.phone, c.contact_id
        ), inserted AS (
            INSERT INTO ingest.contacts AS c (name, phone, phone_hash, first_seen_at, last_seen_at)
            SELECT i.n, i.p, i.ph, i.s, i.s FROM input i
             WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.phone = i.p)
            ON CONFLICT (phone) WHERE email IS NULL DO UPDATE
               SET name = COALESCE(EXCLUDED.name, c.name),
                   last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at)
            RETURNING c.phone, c.contact_id
        )
        SELECT phone, contact_id FROM updated UNION ALL SELECT phone, contact_id FROM inserted
        """,
        names,
        phones,
        phone_hashes,
        seen,
    )
    return {r["phone"]: r["contact_id"] for r in rows}


async def insert_submissions(
    conn: Conn,
    submission_ids: Sequence[uuid.UUID],
    contact_ids: Sequence[uuid.UUID],
    sources: Sequence[str],
    channels: Sequence[str],
    messages: Sequence[str | None],
    notice_versions: Sequence[str],
    received: Sequence[datetime],
) -> None:
    """Insert the batch's submissions, in batch order (the feed lock is held)."""
    await conn.execute(
        """
        INSERT INTO ingest.submissions
               (submission_id, contact_id, source, channel, message, notice_version, received_at)
        SELECT i, c, s, ch, m, n, r
          FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                      $7::timestamptz[]) WITH ORDINALITY AS t(i, c, s, ch, m, n, r, o)
         ORDER BY o
        """,
        submission_ids,
        contact_ids,
        sources,
        channels,
        messages,
        notice_versions,
        received,
    )


async def insert_purposes(
    conn: Conn,
    submission_ids: Sequence[uuid.UUID],
    purposes: Sequence[str],
    bases: Sequence[str],
    days: Sequence[int],
) -> None:
    """Insert every purpose of every submission of the batch."""
    await conn.execute(
        """
        INSERT INTO ingest.submission_purposes (submission_id, purpose, lawful_basis, retention_days)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[])
        """,
        submission_ids,
        purposes,
        bases,
        days,
    )


async def insert_consent_events(
    conn: Conn,
    contact_ids: Sequence[uuid.UUID],
    submission_ids: Sequence[uuid.UUID],
    consent_ids: Sequence[str],
    purposes: Sequence[str],
    granted: Sequence[bool],
    text_hashes: Sequence[str],
    sources: Sequence[str],
    notice_versions: Sequence[str],
    recorded: Sequence[datetime],
) -> None:
    """Append every consent event of the batch, in order (the hash chain follows it)."""
    await conn.execute(
        """
        INSERT INTO ingest.consent_events
               (contact_id, submission_id, consent_id, purpose, granted, text_sha256, source,
                notice_version, recorded_at)
        SELECT c, s, k, p, g, h, src, n, r
          FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::text[],
                      $7::text[], $8::text[], $9::timestamptz[]) WITH ORDINALITY
               AS t(c, s, k, p, g, h, src, n, r, o)
         ORDER BY o
        """,
        contact_ids,
        submission_ids,
        consent_ids,
        purposes,
        granted,
        text_hashes,
        sources,
        notice_versions,
        recorded,
    )


async def notify_submissions(conn: Conn, submission_ids: Sequence[uuid.UUID]) -> None:
    """Queue one crm_submission notification per submission (delivered at COMMIT)."""
    await conn.execute(
        "SELECT pg_notify('crm_submission', i::text) FROM unnest($1::uuid[]) AS i", submission_ids
    )
