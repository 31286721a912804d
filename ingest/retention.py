"""Retention (Art. 5(1)(e)): contacts whose retention ran out are erased, expired pieces removed.

Runs from the maintenance loop (web/maintenance.py) and `ingest purge`, under a lease
so that two replicas never purge at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg

from ingest.rights import erase_contacts_locked
from ingest.store import chats, leases, outbox, pending_consents, requests, subjects, used_links
from ingest.store import retention as retention_sql

PURGE_CHUNK = 100


PURGE_LEASE = "purge"  # one replica purges at a time


PURGE_LEASE_SECONDS = 3600.0  # a holder that died frees it after this


# How long an answered request keeps the keyed hash of the person's e-mail or phone: long
# enough to match a follow-up ("I asked you last week"), then only its dates remain.
REQUEST_HASH_DAYS = 30
OUTBOX_KEPT_DAYS = 30  # a sent or given-up mail's row (dates and kind only) is then dropped


async def purge(
    pool: asyncpg.Pool,
    now: datetime,
    actor: str,
    pepper: str,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Erase contacts whose retention ran out, and expired chat pieces (Art. 5(1)(e)).

    Runs in chunks (one transaction each) under a lease, so two replicas never purge
    at once; returns what was (or, dry run, would be) removed.
    """
    holder = f"{actor}:{uuid.uuid4()}"
    async with pool.acquire() as conn:
        if not await leases.acquire(conn, PURGE_LEASE, holder, PURGE_LEASE_SECONDS):
            return {"skipped_locked": 1}
    completed = False
    try:
        report = await _purge_locked(pool, now, actor, pepper, dry_run, progress)
        if not dry_run:
            async with pool.acquire() as conn:
                report["request_hashes_dropped"] = await requests.forget_answered_requests(
                    conn, REQUEST_HASH_DAYS
                )
                # Grants nobody confirmed in time; outbox rows whose mail went (no personal data).
                report["pending_consents_expired"] = await pending_consents.purge_expired(conn, now)
                report["outbox_rows_dropped"] = await outbox.forget_done(conn, OUTBOX_KEPT_DAYS)
        completed = not dry_run
        return report
    finally:
        async with pool.acquire() as conn:
            await leases.release(conn, PURGE_LEASE, holder, completed=completed)


async def _purge_locked(
    pool: asyncpg.Pool,
    now: datetime,
    actor: str,
    pepper: str,
    dry_run: bool,
    progress: Callable[[int, int], None] | None,
) -> dict[str, int]:

    async with pool.acquire() as conn:
        total = await retention_sql.count_expired_contacts(conn, now)
        if dry_run:
            pending = await chats.count_expired_pending_chats(conn, now)
            return {"contacts": total, "pending_chats": pending, "dry_run": 1}
    report = {"contacts": 0, "submissions": 0, "consent_events_unlinked": 0}
    while True:
        async with pool.acquire() as conn, conn.transaction():
            batch = await retention_sql.expired_contacts(conn, now, PURGE_CHUNK)
            if not batch:
                break
            for key, value in (await erase_contacts_locked(conn, batch)).items():
                report[key] += value
        if progress:
            progress(report["contacts"], total)
    async with pool.acquire() as conn, conn.transaction():
        report["pending_chats"] = await chats.delete_expired_pending_chats(conn)
        report["used_links"] = await used_links.delete_expired_used_links(conn)
        await subjects.audit(conn, pepper, actor, "purge", report)
    return report
