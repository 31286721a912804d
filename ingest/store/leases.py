"""Leases: one replica at a time runs a periodic job, without an advisory lock any role could take."""

from __future__ import annotations

from datetime import datetime

from ingest.store.connection import Conn


async def acquire(conn: Conn, name: str, holder: str, seconds: float) -> bool:
    """Take (or renew) the lease `name` for `seconds`; False while another holder's is unexpired."""
    taken = await conn.fetchval(
        """
        UPDATE ingest.leases SET holder = $2, until = now() + make_interval(secs => $3)
         WHERE name = $1 AND (until < now() OR holder = $2)
        RETURNING true
        """,
        name,
        holder,
        seconds,
    )
    return bool(taken)


async def release(conn: Conn, name: str, holder: str, *, completed: bool) -> None:
    """Give the lease up; record the completion time when the job ran to its end."""
    await conn.execute(
        """
        UPDATE ingest.leases
           SET until = '-infinity',
               last_done_at = CASE WHEN $3 THEN now() ELSE last_done_at END
         WHERE name = $1 AND holder = $2
        """,
        name,
        holder,
        completed,
    )


async def last_done(conn: Conn, name: str) -> datetime | None:
    """When the job last ran to completion (on any replica), or None."""
    done: datetime | None = await conn.fetchval(
        "SELECT last_done_at FROM ingest.leases WHERE name = $1", name
    )
    return done
