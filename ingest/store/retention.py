"""SQL of the retention purge: contacts whose every purpose's retention has run out.

ingest/retention.py erases them (with the subject rights' erasure, store/subjects.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from ingest.store.connection import Conn


async def expired_contacts(conn: Conn, now: datetime, limit: int) -> list[uuid.UUID]:
    """Contacts whose every purpose's retention has run out since their last activity, row-locked.

    The lock re-checks `last_seen_at` on the newest row version, so a contact that a
    submission committed a moment ago made active again is not erased; one being
    written to right now is skipped until the next run.
    """
    rows = await conn.fetch(
        """
        SELECT c.contact_id
          FROM ingest.contacts c
         WHERE c.last_seen_at + make_interval(days => coalesce((
                   SELECT max(p.retention_days)
                     FROM ingest.submissions s JOIN ingest.submission_purposes p USING (submission_id)
                    WHERE s.contact_id = c.contact_id), 0)) <= $1
         ORDER BY c.last_seen_at
         LIMIT $2
           FOR UPDATE OF c SKIP LOCKED
        """,
        now,
        limit,
    )
    return [row["contact_id"] for row in rows]


async def count_expired_contacts(conn: Conn, now: datetime) -> int:
    """How many contacts a purge would erase now."""
    count: int = await conn.fetchval(
        """
        SELECT count(*) FROM ingest.contacts c
         WHERE c.last_seen_at + make_interval(days => coalesce((
                   SELECT max(p.retention_days)
                     FROM ingest.submissions s JOIN ingest.submission_purposes p USING (submission_id)
                    WHERE s.contact_id = c.contact_id), 0)) <= $1
        """,
        now,
    )
    return count
