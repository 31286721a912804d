"""SQL of the single-use links: a link used once, or older than an objection it would lift, is refused."""

from __future__ import annotations

from datetime import datetime

from ingest.store.connection import Conn, rows_affected


async def confirm_link_refused(conn: Conn, email_hash: bytes, digest: bytes, issued_at: datetime) -> bool:
    """Whether a confirmation link is used up, or older than the latest objection it would lift.

    The objections it would lift: the e-mail hash's and those of the phones of the
    contacts with that e-mail (what confirm_opt_in removes).
    """
    refused: bool = await conn.fetchval(
        """
        SELECT EXISTS (SELECT 1 FROM ingest.used_links WHERE digest = $2)
            OR EXISTS (SELECT 1 FROM ingest.suppressions s
                        WHERE s.last_objected_at >= $3
                          AND (s.key_hash = $1 OR s.key_hash IN (SELECT c.phone_hash FROM ingest.contacts c
                                                                  WHERE c.email_hash = $1)))
        """,
        email_hash,
        digest,
        issued_at,
    )
    return refused


async def use_link(conn: Conn, digest: bytes, expires_at: datetime) -> bool:
    """Record a single-use link as used; False if it already was (a concurrent use waits, then sees it)."""
    result: str = await conn.execute(
        """
        INSERT INTO ingest.used_links (digest, expires_at) VALUES ($1, $2)
        ON CONFLICT (digest) DO NOTHING
        """,
        digest,
        expires_at,
    )
    return rows_affected(result) == 1


async def delete_expired_used_links(conn: Conn) -> int:
    """Forget used links past their expiry (an expired link is refused anyway)."""
    return rows_affected(await conn.execute("DELETE FROM ingest.used_links WHERE expires_at <= now()"))
