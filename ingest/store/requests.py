"""SQL of the subject requests: received, due in one month, completed, then forgotten."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from ingest.store.connection import Conn, rows_affected


async def open_request(conn: Conn, kind: str, subject_hash: bytes, actor: str, received_at: datetime) -> int:
    """Record a request received (e.g. by letter) with its one-month deadline."""
    request_id: int = await conn.fetchval(
        """
        INSERT INTO ingest.subject_requests (kind, subject_hash, received_at, due_at, actor)
        VALUES ($1, $2, $3::timestamptz, $3::timestamptz + interval '1 month', $4) RETURNING request_id
        """,
        kind,
        subject_hash,
        received_at,
        actor,
    )
    return request_id


async def complete_requests(conn: Conn, kind: str, subject_hashes: Sequence[bytes]) -> int:
    """Close the open requests of this kind for this person; return how many.

    A right exercised with no request open leaves no row here: the audit log records it,
    without anything that identifies the person.
    """
    result: str = await conn.execute(
        """
        UPDATE ingest.subject_requests SET completed_at = now()
         WHERE kind = $1 AND subject_hash = ANY($2::bytea[]) AND completed_at IS NULL
        """,
        kind,
        list(subject_hashes),
    )
    return rows_affected(result)


async def forget_answered_requests(conn: Conn, days: int) -> int:
    """Drop the keyed hash of requests answered more than `days` ago (the row and its dates stay)."""
    result: str = await conn.execute(
        """
        UPDATE ingest.subject_requests SET subject_hash = NULL
         WHERE subject_hash IS NOT NULL AND completed_at < now() - make_interval(days => $1)
        """,
        days,
    )
    return rows_affected(result)


async def open_requests(conn: Conn) -> list[asyncpg.Record]:
    """Open requests, oldest deadline first."""
    return list(
        await conn.fetch(
            """
        SELECT request_id, kind, received_at, due_at, due_at < now() AS overdue, actor
          FROM ingest.subject_requests WHERE completed_at IS NULL ORDER BY due_at
        """
        )
    )


async def count_overdue(conn: Conn) -> int:
    """How many requests are past their deadline."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM ingest.subject_requests WHERE completed_at IS NULL AND due_at < now()"
    )
    return count


async def open_due(conn: Conn, kind: str, subject_hash: bytes) -> datetime | None:
    """When the open request of this kind for this person is due (None: none is open)."""
    due: datetime | None = await conn.fetchval(
        """
        SELECT min(due_at) FROM ingest.subject_requests
         WHERE kind = $1 AND subject_hash = $2 AND completed_at IS NULL
        """,
        kind,
        subject_hash,
    )
    return due
