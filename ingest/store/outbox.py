"""SQL of the mail outbox: written with what caused a mail, claimed and finished by the mailer.

A row holds the recipient and what the mail says only while it waits (sql/011_mail.sql).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ingest.store.connection import Conn, rows_affected

KINDS = ("confirm", "receipt", "access")


@dataclass(frozen=True, slots=True)
class Mail:
    """A mail to queue: who to, in which language, and what it is to say.

    No secrets: its links are signed when the mail is composed.
    """

    kind: str
    recipient: str
    language: str
    details: dict[str, Any]
    message_id: str
    contact_id: uuid.UUID | None = None


async def enqueue(conn: Conn, mails: Sequence[Mail]) -> None:
    """Queue mails in the caller's transaction (they go only if it commits)."""
    if not mails:
        return
    await conn.execute(
        """
        INSERT INTO ingest.outbox (kind, recipient, language, details, message_id, contact_id)
        SELECT k, r, l, d::jsonb, m, c
          FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[])
               AS t(k, r, l, d, m, c)
        """,
        [m.kind for m in mails],
        [m.recipient for m in mails],
        [m.language for m in mails],
        [json.dumps(m.details, sort_keys=True) for m in mails],
        [m.message_id for m in mails],
        [m.contact_id for m in mails],
    )


async def claim(conn: Conn, limit: int, lease_seconds: float) -> list[asyncpg.Record]:
    """Lease up to `limit` due mails to this sender; another sender skips them until the lease ends.

    A sender that dies mid-send leaves its lease to run out: the mail is sent again (with
    the same Message-ID), at least once.
    """
    return list(
        await conn.fetch(
            """
            UPDATE ingest.outbox o
               SET leased_until = now() + make_interval(secs => $2), attempts = o.attempts + 1
             WHERE o.mail_id IN (
                   SELECT mail_id FROM ingest.outbox
                    WHERE state = 'queued' AND next_attempt_at <= now()
                      AND (leased_until IS NULL OR leased_until <= now())
                    ORDER BY next_attempt_at, mail_id
                    LIMIT $1
                      FOR UPDATE SKIP LOCKED)
            RETURNING o.mail_id, o.kind, o.recipient, o.language, o.details, o.message_id,
                      o.attempts, o.created_at, o.contact_id
            """,
            limit,
            lease_seconds,
        )
    )


async def finish(conn: Conn, mail_id: int, state: str, error: str | None = None) -> bool:
    """Record a mail handed over ('sent') or given up ('failed'), forgetting its personal data."""
    result: str = await conn.execute(
        """
        UPDATE ingest.outbox
           SET state = $2, recipient = NULL, details = NULL, leased_until = NULL, done_at = now(),
               last_error = $3
         WHERE mail_id = $1 AND state = 'queued'
        """,
        mail_id,
        state,
        error,
    )
    return rows_affected(result) == 1


async def retry_later(conn: Conn, mail_id: int, delay_seconds: float, error: str) -> None:
    """Put a mail back to wait `delay_seconds` before its next attempt."""
    await conn.execute(
        """
        UPDATE ingest.outbox
           SET next_attempt_at = now() + make_interval(secs => $2), leased_until = NULL, last_error = $3
         WHERE mail_id = $1 AND state = 'queued'
        """,
        mail_id,
        delay_seconds,
        error,
    )


async def depth(conn: Conn) -> tuple[int, float]:
    """How many mails wait, and the age in seconds of the oldest (0 when none)."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age
          FROM ingest.outbox WHERE state = 'queued'
        """
    )
    assert row is not None  # noqa: S101 - an aggregate always returns a row
    return int(row["n"]), float(row["age"])


async def forget_done(conn: Conn, days: int) -> int:
    """Drop sent or failed rows (no personal data left in them) older than `days`."""
    return rows_affected(
        await conn.execute(
            "DELETE FROM ingest.outbox"
            " WHERE state <> 'queued' AND done_at < now() - make_interval(days => $1)",
            days,
        )
    )


async def waiting_for(conn: Conn, contact_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """The mails still waiting to go to these contacts (for the export: kind and time only)."""
    rows = await conn.fetch(
        """
        SELECT kind, created_at FROM ingest.outbox
         WHERE contact_id = ANY($1::uuid[]) AND state = 'queued' ORDER BY mail_id
        """,
        list(contact_ids),
    )
    return [{"kind": r["kind"], "queued_at": r["created_at"].isoformat()} for r in rows]
