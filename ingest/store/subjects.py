"""SQL of the data subject rights: find, export, erase, object.

The requests' clock is in store/requests.py, single-use links in store/used_links.py,
the purge's selection in store/retention.py.

The ledger rows themselves (consent events, audit rows) are appended by store/ledger.py,
which chains them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ingest.store import ledger
from ingest.store.connection import Conn, rows_affected


async def find_contacts(conn: Conn, email_key: str | None, phone: str | None) -> list[uuid.UUID]:
    """The contacts a request names: keyed by this canonical e-mail key, or known only by this phone.

    Nothing is reached through a second identifier: a phone stored next to an e-mail
    (or an e-mail next to a phone) may have been typed by anybody, so it never hands
    over or erases another contact (`review_notes` tells the privacy officer about them).
    """
    rows = await conn.fetch(
        """
        SELECT contact_id FROM ingest.contacts
         WHERE ($1::text IS NOT NULL AND email_key = $1)
            OR ($2::text IS NOT NULL AND email IS NULL AND phone = $2)
         ORDER BY first_seen_at
        """,
        email_key,
        phone,
    )
    return [row["contact_id"] for row in rows]


async def review_notes(
    conn: Conn, phone: str | None, contact_ids: Sequence[uuid.UUID]
) -> list[dict[str, Any]]:
    """What a request by these identifiers did not include, for the privacy officer to verify first."""
    row = await conn.fetchrow(
        """
        WITH phones AS (
            SELECT phone FROM ingest.contacts WHERE contact_id = ANY($1::uuid[]) AND phone IS NOT NULL
            UNION
            SELECT phone FROM ingest.submissions WHERE contact_id = ANY($1::uuid[]) AND phone IS NOT NULL
        )
        SELECT (SELECT count(*) FROM ingest.contacts c
                 WHERE c.email IS NULL AND c.phone IN (SELECT phone FROM phones)
                   AND c.contact_id <> ALL($1::uuid[])) AS phone_only,
               (SELECT count(DISTINCT c.contact_id) FROM ingest.contacts c
                 WHERE $2::text IS NOT NULL AND c.email IS NOT NULL AND c.contact_id <> ALL($1::uuid[])
                   AND (c.phone = $2 OR EXISTS (SELECT 1 FROM ingest.submissions s
                                                 WHERE s.contact_id = c.contact_id AND s.phone = $2)))
               AS other_email
        """,
        list(contact_ids),
        phone,
    )
    notes = []
    if row is not None and row["phone_only"]:
        notes.append(
            {
                "note": "a phone number on these contacts is also the only identifier of other contacts; "
                "not included: add --phone once the person has shown they hold that number",
                "contacts": int(row["phone_only"]),
            }
        )
    if row is not None and row["other_email"]:
        notes.append(
            {
                "note": "this phone number also appears on contacts with another e-mail address; "
                "not included: they are reached by that address",
                "contacts": int(row["other_email"]),
            }
        )
    return notes


async def remove_phone_values(conn: Conn, phone: str, contact_ids: Sequence[uuid.UUID]) -> int:
    """Erase a phone number where it stands beside another person's e-mail; return how many values."""
    contacts: str = await conn.execute(
        """
        UPDATE ingest.contacts SET phone = NULL, phone_hash = NULL
         WHERE phone = $1 AND email IS NOT NULL AND contact_id <> ALL($2::uuid[])
        """,
        phone,
        list(contact_ids),
    )
    submissions: str = await conn.execute(
        "UPDATE ingest.submissions SET phone = NULL WHERE phone = $1 AND contact_id <> ALL($2::uuid[])",
        phone,
        list(contact_ids),
    )
    return rows_affected(contacts) + rows_affected(submissions)


async def lock_contacts(conn: Conn, contact_ids: Sequence[uuid.UUID]) -> None:
    """Row-lock these contacts until COMMIT (in id order)."""
    await conn.execute(
        "SELECT 1 FROM ingest.contacts WHERE contact_id = ANY($1::uuid[]) ORDER BY contact_id FOR UPDATE",
        list(contact_ids),
    )


async def contacts_by_email_hash(conn: Conn, email_hash: bytes) -> list[uuid.UUID]:
    """Contacts whose e-mail has this keyed hash (signed links carry only the hash)."""
    rows = await conn.fetch("SELECT contact_id FROM ingest.contacts WHERE email_hash = $1", email_hash)
    return [row["contact_id"] for row in rows]


async def emails_of(conn: Conn, contact_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The e-mail address of each of these contacts that has one."""
    rows = await conn.fetch(
        "SELECT contact_id, email FROM ingest.contacts"
        " WHERE contact_id = ANY($1::uuid[]) AND email IS NOT NULL",
        list(contact_ids),
    )
    return {row["contact_id"]: row["email"] for row in rows}


async def record_confirmed(conn: Conn, pepper: str, confirmed: Sequence[asyncpg.Record]) -> int:
    """The grants a person confirmed (pending_consents rows): one consent event each, as first worded.

    The caller holds the feed lock.
    """
    events = [
        ledger.ConsentEvent(
            r["contact_id"],
            r["consent_id"],
            r["purpose"],
            granted=True,
            text_sha256=r["text_sha256"],
            source=r["source"],
            notice_version=r["notice_version"],
        )
        for r in confirmed
    ]
    return await ledger.append_consent_events(conn, ledger.chain_key(pepper), events)


async def export_contacts(conn: Conn, contact_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Everything held on these contacts: fields, submissions with purposes and notices, consent history."""
    document: str = await conn.fetchval(
        """
        SELECT coalesce(jsonb_agg(jsonb_build_object(
            'contact_id', c.contact_id, 'name', c.name, 'email', c.email, 'phone', c.phone,
            'first_seen_at', c.first_seen_at, 'last_seen_at', c.last_seen_at,
            'marketing_allowed', v.marketing_allowed,
            'submissions', coalesce((
                SELECT jsonb_agg(jsonb_build_object(
                    'submission_id', s.submission_id, 'source', s.source, 'channel', s.channel,
                    'name', s.name, 'email', s.email, 'phone', s.phone,
                    'message', s.message, 'received_at', s.received_at,
                    'notice_version', s.notice_version,
                    'purposes', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                     'purpose', p.purpose, 'lawful_basis', p.lawful_basis,
                                     'retention_days', p.retention_days) ORDER BY p.purpose), '[]')
                                   FROM ingest.submission_purposes p
                                  WHERE p.submission_id = s.submission_id),
                    'notices', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                    'purpose', n.purpose, 'lawful_basis', n.lawful_basis,
                                    'provider_basis', n.provider_basis,
                                    'subscription_type_id', n.subscription_type_id,
                                    'applies', n.applies, 'text', n.text, 'shown_at', n.shown_at)
                                    ORDER BY n.notice_id), '[]')
                                  FROM ingest.submission_notices n
                                 WHERE n.submission_id = s.submission_id)
                ) ORDER BY s.received_at, s.seq)
                FROM ingest.submissions s WHERE s.contact_id = c.contact_id), '[]'),
            'consent_history', coalesce((
                SELECT jsonb_agg(jsonb_build_object(
                    'consent_id', e.consent_id, 'purpose', e.purpose, 'granted', e.granted,
                    'text', t.text, 'text_sha256', e.text_sha256, 'source', e.source,
                    'notice_version', e.notice_version, 'recorded_at', e.recorded_at
                ) ORDER BY e.event_id)
                FROM ingest.consent_events e JOIN ingest.consent_texts t USING (consent_id)
                WHERE e.contact_id = c.contact_id), '[]')
        ) ORDER BY c.first_seen_at), '[]')::text
          FROM ingest.contacts c JOIN crm.contacts v USING (contact_id)
         WHERE c.contact_id = ANY($1::uuid[])
        """,
        list(contact_ids),
    )
    result: list[dict[str, Any]] = json.loads(document)
    return result


async def erase_contacts(conn: Conn, contact_ids: Sequence[uuid.UUID]) -> dict[str, int]:
    """Delete contacts (submissions and purposes cascade; consent events are unlinked)."""
    counts = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM ingest.submissions WHERE contact_id = ANY($1::uuid[])) AS submissions,
               (SELECT count(*) FROM ingest.consent_events
                 WHERE contact_id = ANY($1::uuid[])) AS consent_events
        """,
        list(contact_ids),
    )
    result: str = await conn.execute(
        "DELETE FROM ingest.contacts WHERE contact_id = ANY($1::uuid[])", list(contact_ids)
    )
    if counts is None:  # pragma: no cover - a SELECT of two counts always returns a row
        raise RuntimeError("no counts")
    return {
        "contacts": rows_affected(result),
        "submissions": int(counts["submissions"]),
        "consent_events_unlinked": int(counts["consent_events"]),
    }


async def contact_keys(conn: Conn, contact_ids: Sequence[uuid.UUID]) -> list[tuple[bytes, str]]:
    """The suppression keys (email and phone hashes) of these contacts."""
    rows = await conn.fetch(
        """
        SELECT email_hash AS key, 'email' AS kind FROM ingest.contacts
         WHERE contact_id = ANY($1::uuid[]) AND email_hash IS NOT NULL
        UNION
        SELECT phone_hash, 'phone' FROM ingest.contacts
         WHERE contact_id = ANY($1::uuid[]) AND phone_hash IS NOT NULL
        """,
        list(contact_ids),
    )
    return [(row["key"], row["kind"]) for row in rows]


async def add_suppressions(conn: Conn, keys: Sequence[tuple[bytes, str]]) -> int:
    """Record direct-marketing objections by keyed hash; return how many are new.

    An objection already on the list is objected to again: its `last_objected_at` moves
    forward, so a confirmation link issued before this objection cannot lift it.
    """
    # xmax = 0 on the returned row: it was inserted, not updated. DISTINCT ON: one row
    # per key, as DO UPDATE cannot touch the same row twice in one statement.
    rows = await conn.fetch(
        """
        INSERT INTO ingest.suppressions (key_hash, kind)
        SELECT DISTINCT ON (k) k, kind FROM unnest($1::bytea[], $2::text[]) AS t(k, kind)
        ON CONFLICT (key_hash) DO UPDATE SET last_objected_at = now()
        RETURNING xmax = 0 AS added
        """,
        [k for k, _ in keys],
        [kind for _, kind in keys],
    )
    return sum(1 for row in rows if row["added"])


async def remove_suppression(conn: Conn, key: bytes, objected_before: datetime) -> int:
    """Lift a suppression last objected to before `objected_before` (a confirmed opt-in's link issue time).

    The condition is in the DELETE itself: an objection committed while the opt-in runs
    is re-checked on the row's newest version and stays.
    """
    return rows_affected(
        await conn.execute(
            "DELETE FROM ingest.suppressions WHERE key_hash = $1 AND last_objected_at < $2",
            key,
            objected_before,
        )
    )


async def suppressed(conn: Conn, keys: Sequence[bytes]) -> list[bytes]:
    """Which of these keys are on the suppression list."""
    rows = await conn.fetch(
        "SELECT key_hash FROM ingest.suppressions WHERE key_hash = ANY($1::bytea[])", list(keys)
    )
    return [row["key_hash"] for row in rows]


async def record_consent_for_contacts(
    conn: Conn,
    pepper: str,
    contact_ids: Sequence[uuid.UUID],
    consent_id: str,
    purpose: str,
    *,
    granted: bool,
    text_sha256: str,
    source: str,
) -> int:
    """Append one consent event per contact (a withdrawal or a grant); the caller holds the feed lock."""
    events = [ledger.ConsentEvent(c, consent_id, purpose, granted, text_sha256, source) for c in contact_ids]
    return await ledger.append_consent_events(conn, ledger.chain_key(pepper), events)


async def add_subject_events(conn: Conn, contact_ids: Sequence[uuid.UUID], event: str) -> None:
    """Tell the CRM (crm.subject_events); the caller holds the feed lock."""
    await conn.execute(
        "INSERT INTO ingest.subject_events (contact_id, event) SELECT c, $2 FROM unnest($1::uuid[]) AS c",
        list(contact_ids),
        event,
    )


async def audit(conn: Conn, pepper: str, actor: str, action: str, details: dict[str, Any]) -> None:
    """Append an audit row (counts and kinds only), chained."""
    await ledger.append_audit(conn, ledger.chain_key(pepper), actor, action, details)
