"""The CRM feed as a consumer reads it: crm.submissions in seq order, woken by NOTIFY.

The service's own side of the feed is the feed lock (store/locks.py), which makes
sequence numbers become visible in order; this is the reader's side, used by
`ingest crm-tail`, an example consumer of the contract in docs/crm-contract.md.
"""

from __future__ import annotations

import asyncpg

from ingest.store.connection import Conn

NOTIFY_CHANNEL = "crm_submission"


async def submissions_after(conn: Conn, seq: int, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` crm.submissions rows after `seq`, in seq order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT submission_id, seq, contact_id, source, channel, message, purposes, received_at
          FROM crm.submissions WHERE seq > $1 ORDER BY seq LIMIT $2
        """,
        seq,
        limit,
    )
    return rows
