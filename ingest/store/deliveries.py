"""Delivery ids: each provider delivery is stored once; a repeat resolves to its first submission.

Ids are kept as keyed digests (`pseudonyms.delivery_digest`), never as the provider's
own id, so a replay is recognised even after the submission it led to was erased.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ingest.pseudonyms import delivery_digest
from ingest.store.connection import Conn


async def claim_deliveries(
    conn: Conn, sources: Sequence[str], delivery_ids: Sequence[str], submission_ids: Sequence[uuid.UUID]
) -> dict[tuple[str, str], uuid.UUID]:
    """Claim delivery ids; return the ones seen before, with their first submission id.

    A concurrent transaction holding the same key makes this wait until it
    finishes: then ON CONFLICT sees its row, so a race resolves to one submission.

    A repeat's answer ("duplicate", a 2xx) must be as durable as a first one: its first
    COMMIT may have been cut off at the deadline while it waited for the synchronous
    standby (committed on the primary only). Locking the rows read (FOR KEY SHARE) writes
    WAL, so this transaction's COMMIT too waits until a standby holds everything up to
    it, the first commit included; without it, a read-only COMMIT returns at once.
    """
    if not sources:
        return {}
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
           FOR KEY SHARE OF d
        """,
        [s for s, _ in seen],
        [d for _, d in seen],
    )
    return {(r["source"], r["delivery_id"]): r["submission_id"] for r in rows}


async def rekey_legacy_deliveries(conn: Conn, pepper: str, chunk: int = 1000) -> int:
    """Delivery ids stored in the clear (before migration 005) become keyed digests; run at start."""
    if not await conn.fetchval("SELECT to_regclass('ingest.deliveries') IS NOT NULL"):
        return 0  # not migrated yet: /readyz says so
    total = 0
    while True:
        rows = await conn.fetch(
            "SELECT source, delivery_id FROM ingest.deliveries WHERE delivery_id NOT LIKE 'k1:%' LIMIT $1",
            chunk,
        )
        if not rows:
            return total
        await conn.execute(
            """
            UPDATE ingest.deliveries d SET delivery_id = n.digest
              FROM unnest($1::text[], $2::text[], $3::text[]) AS n(source, old, digest)
             WHERE d.source = n.source AND d.delivery_id = n.old
            """,
            [r["source"] for r in rows],
            [r["delivery_id"] for r in rows],
            [delivery_digest(pepper, r["source"], r["delivery_id"]) for r in rows],
        )
        total += len(rows)
