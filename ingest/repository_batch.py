"""Set-based SQL for group commit: one statement per table for a whole batch of submissions.

The caller (group_commit.py) has already de-duplicated the batch: one entry per
delivery id, one contact row per e-mail (lower-cased) or phone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ingest.repository import FEED_LOCK_KEY, Conn


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


@dataclass(frozen=True, slots=True)
class BatchRows:
    """The rows of a batch's new submissions, as column arrays (one entry per row)."""

    submission_ids: Sequence[uuid.UUID]
    contact_ids: Sequence[uuid.UUID]
    sources: Sequence[str]
    channels: Sequence[str]
    messages: Sequence[str | None]
    notice_versions: Sequence[str]
    received: Sequence[datetime]
    # submission_purposes rows
    purpose_submission_ids: Sequence[uuid.UUID]
    purposes: Sequence[str]
    bases: Sequence[str]
    days: Sequence[int]
    # consent_events rows, in order (the hash chain follows it)
    event_contact_ids: Sequence[uuid.UUID]
    event_submission_ids: Sequence[uuid.UUID]
    event_consent_ids: Sequence[str]
    event_purposes: Sequence[str]
    event_granted: Sequence[bool]
    event_text_hashes: Sequence[str]
    event_sources: Sequence[str]
    event_notice_versions: Sequence[str]
    event_recorded: Sequence[datetime]


# One statement, one round trip: take the feed lock (held to COMMIT, so seq values
# become visible in order), insert the submissions in batch order, their purposes
# and consent events, and queue one crm_submission notification per submission.
# Data-modifying CTEs always run to completion; foreign keys are checked at the end
# of the statement, when the submissions are in.
_INSERT_ROWS = """
WITH feed_lock AS MATERIALIZED (
    SELECT pg_advisory_xact_lock($1::bigint)
), subs AS (
    INSERT INTO ingest.submissions
           (submission_id, contact_id, source, channel, message, notice_version, received_at)
    SELECT i, c, s, ch, m, n, r
      FROM feed_lock,
           unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                  $8::timestamptz[]) WITH ORDINALITY AS t(i, c, s, ch, m, n, r, o)
     ORDER BY o
    RETURNING submission_id
), purposes AS (
    INSERT INTO ingest.submission_purposes (submission_id, purpose, lawful_basis, retention_days)
    SELECT * FROM unnest($9::uuid[], $10::text[], $11::text[], $12::int[])
), events AS (
    INSERT INTO ingest.consent_events
           (contact_id, submission_id, consent_id, purpose, granted, text_sha256, source,
            notice_version, recorded_at)
    SELECT c, s, k, p, g, h, src, n, r
      FROM unnest($13::uuid[], $14::uuid[], $15::text[], $16::text[], $17::bool[], $18::text[],
                  $19::text[], $20::text[], $21::timestamptz[]) WITH ORDINALITY
           AS t(c, s, k, p, g, h, src, n, r, o)
     ORDER BY o
), notified AS (
    SELECT pg_notify('crm_submission', submission_id::text) FROM subs
)
SELECT count(*) FROM notified
"""


async def insert_rows(conn: Conn, rows: BatchRows) -> None:
    """Write the batch's submissions, purposes and consent events in one statement."""
    await conn.fetchval(
        _INSERT_ROWS,
        FEED_LOCK_KEY,
        rows.submission_ids,
        rows.contact_ids,
        rows.sources,
        rows.channels,
        rows.messages,
        rows.notice_versions,
        rows.received,
        rows.purpose_submission_ids,
        rows.purposes,
        rows.bases,
        rows.days,
        rows.event_contact_ids,
        rows.event_submission_ids,
        rows.event_consent_ids,
        rows.event_purposes,
        rows.event_granted,
        rows.event_text_hashes,
        rows.event_sources,
        rows.event_notice_versions,
        rows.event_recorded,
    )
