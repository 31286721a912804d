"""The pending chat store: pieces of a chat session waiting for an e-mail or phone, and their delivery ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ingest.store.connection import Conn, rows_affected


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


async def claim_piece(conn: Conn, source: str, delivery_id: str) -> tuple[bool, uuid.UUID | None]:
    """Record a chat piece's delivery id; (seen before, the submission it led to if any).

    Every piece is recorded, also one that only waits in the pending store, so a
    replay of it (after an erasure, say) is recognised and stores nothing again.
    """
    inserted = await conn.fetchval(
        """
        INSERT INTO ingest.deliveries (source, delivery_id, submission_id) VALUES ($1, $2, NULL)
        ON CONFLICT (source, delivery_id) DO NOTHING RETURNING true
        """,
        source,
        delivery_id,
    )
    if inserted:
        return False, None
    first: uuid.UUID | None = await conn.fetchval(
        "SELECT submission_id FROM ingest.deliveries WHERE source = $1 AND delivery_id = $2",
        source,
        delivery_id,
    )
    return True, first


async def link_piece(conn: Conn, source: str, delivery_id: str, submission_id: uuid.UUID) -> None:
    """Point a claimed piece at the submission it became part of."""
    await conn.execute(
        "UPDATE ingest.deliveries SET submission_id = $3 WHERE source = $1 AND delivery_id = $2",
        source,
        delivery_id,
        submission_id,
    )


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
    return rows_affected(await conn.execute("DELETE FROM ingest.pending_chats WHERE expires_at <= now()"))


async def update_contact_of_submission(
    conn: Conn,
    submission_id: uuid.UUID,
    name: str | None,
    phone: str | None,
    phone_hash: bytes | None,
    seen_at: datetime,
) -> None:
    """Fill in a name or phone that arrived after a chat became a submission (chats are authenticated)."""
    await conn.execute(
        """
        WITH own AS (
            UPDATE ingest.submissions
               SET name = COALESCE($2, name), phone = COALESCE(phone, $3)
             WHERE submission_id = $1
        )
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


async def pending_chats_of(
    conn: Conn, email: str | None, phone: str | None, contact_ids: Sequence[uuid.UUID]
) -> list[dict[str, Any]]:
    """Chat pieces naming this e-mail or phone, or tied to these contacts' chats."""
    rows = await conn.fetch(
        """
        SELECT source, fields::text AS fields, created_at, expires_at FROM ingest.pending_chats
         WHERE fields->>'email' = $1 OR fields->>'phone' = $2
            OR submission_id IN (SELECT submission_id FROM ingest.submissions
                                  WHERE contact_id = ANY($3::uuid[]))
        """,
        email,
        phone,
        list(contact_ids),
    )
    return [
        {
            "source": r["source"],
            "fields": json.loads(r["fields"]),
            "created_at": r["created_at"].isoformat(),
            "expires_at": r["expires_at"].isoformat(),
        }
        for r in rows
    ]


async def delete_pending_chats_of(
    conn: Conn, email: str | None, phone: str | None, contact_ids: Sequence[uuid.UUID]
) -> int:
    """Remove pending chat pieces naming this e-mail or phone, or tied to these contacts' chats."""
    result: str = await conn.execute(
        """
        DELETE FROM ingest.pending_chats
         WHERE fields->>'email' = $1 OR fields->>'phone' = $2
            OR submission_id IN (SELECT submission_id FROM ingest.submissions
                                  WHERE contact_id = ANY($3::uuid[]))
        """,
        email,
        phone,
        list(contact_ids),
    )
    return rows_affected(result)


async def count_pending_chats(conn: Conn) -> int:
    """How many chat sessions wait in the pending store (a gauge)."""
    count: int = await conn.fetchval("SELECT count(*) FROM ingest.pending_chats")
    return count


async def count_expired_pending_chats(conn: Conn, now: datetime) -> int:
    """How many pending chat sessions are past their expiry at `now` (a purge's dry run)."""
    count: int = await conn.fetchval("SELECT count(*) FROM ingest.pending_chats WHERE expires_at <= $1", now)
    return count
