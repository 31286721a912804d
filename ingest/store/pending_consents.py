"""SQL of the grants waiting for confirmation (double opt-in, sql/011_mail.sql)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ingest.store.connection import Conn, rows_affected


@dataclass(frozen=True, slots=True)
class Pending:
    """A grant the person has not confirmed yet."""

    contact_id: uuid.UUID
    submission_id: uuid.UUID
    email_hash: bytes
    consent_id: str
    purpose: str
    text_sha256: str
    source: str
    notice_version: str
    requested_at: datetime
    expires_at: datetime


async def add(conn: Conn, pending: Sequence[Pending]) -> None:
    """Record grants awaiting confirmation, in the caller's transaction."""
    if not pending:
        return
    await conn.execute(
        """
        INSERT INTO ingest.pending_consents
               (contact_id, submission_id, email_hash, consent_id, purpose, text_sha256, source,
                notice_version, requested_at, expires_at)
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bytea[], $4::text[], $5::text[], $6::text[],
                             $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
        """,
        [p.contact_id for p in pending],
        [p.submission_id for p in pending],
        [p.email_hash for p in pending],
        [p.consent_id for p in pending],
        [p.purpose for p in pending],
        [p.text_sha256 for p in pending],
        [p.source for p in pending],
        [p.notice_version for p in pending],
        [p.requested_at for p in pending],
        [p.expires_at for p in pending],
    )


async def take(conn: Conn, email_hash: bytes, consent_id: str, now: datetime) -> list[asyncpg.Record]:
    """Remove and return the unexpired grants of this address for this consent (the confirmation)."""
    return list(
        await conn.fetch(
            """
            DELETE FROM ingest.pending_consents
             WHERE email_hash = $1 AND consent_id = $2 AND expires_at > $3
            RETURNING contact_id, submission_id, consent_id, purpose, text_sha256, source,
                      notice_version, requested_at
            """,
            email_hash,
            consent_id,
            now,
        )
    )


async def exists(conn: Conn, email_hash: bytes, consent_id: str, now: datetime) -> bool:
    """Whether an unexpired grant of this address for this consent waits."""
    found: bool = await conn.fetchval(
        """
        SELECT EXISTS (SELECT 1 FROM ingest.pending_consents
                        WHERE email_hash = $1 AND consent_id = $2 AND expires_at > $3)
        """,
        email_hash,
        consent_id,
        now,
    )
    return found


async def purge_expired(conn: Conn, now: datetime) -> int:
    """Forget the grants nobody confirmed in time."""
    return rows_affected(
        await conn.execute("DELETE FROM ingest.pending_consents WHERE expires_at <= $1", now)
    )


async def of_contacts(conn: Conn, contact_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """The grants waiting for these contacts (for the export)."""
    rows = await conn.fetch(
        """
        SELECT consent_id, purpose, source, requested_at, expires_at FROM ingest.pending_consents
         WHERE contact_id = ANY($1::uuid[]) ORDER BY pending_id
        """,
        list(contact_ids),
    )
    return [
        {
            "consent_id": r["consent_id"],
            "purpose": r["purpose"],
            "source": r["source"],
            "requested_at": r["requested_at"].isoformat(),
            "expires_at": r["expires_at"].isoformat(),
        }
        for r in rows
    ]
