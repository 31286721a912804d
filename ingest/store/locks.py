"""The feed lock, and the order in which a transaction takes its locks.

Lock order, in every transaction that takes more than one: the feed lock first,
then the contacts (by id), then the consent-events chain head, then the audit-log
chain head (store/ledger.py). Taken in this order, a writer and a subject right
cannot deadlock; a deadlock that still happens is transient and retried.
"""

from __future__ import annotations

from ingest.store.connection import Conn


async def lock_feed(conn: Conn) -> None:
    """Hold the feed lock until COMMIT, so feed sequence numbers become visible in order."""
    # A row lock on ingest.feed_lock, which only the service's role may take (an advisory
    # lock could be taken by any role that connects, and stall intake).
    await conn.execute("SELECT id FROM ingest.feed_lock FOR UPDATE")


async def probe_write_path(conn: Conn) -> None:
    """Take the feed lock as a write does, in the caller's transaction, changing nothing (/readyz)."""
    await lock_feed(conn)
