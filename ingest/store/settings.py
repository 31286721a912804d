"""Facts about a deployment kept in its database: the pepper's fingerprint."""

from __future__ import annotations

import hashlib
import hmac

from ingest.errors import ConfigError
from ingest.store.connection import Conn

PEPPER_FINGERPRINT = "pepper_fingerprint"


def pepper_fingerprint(pepper: str) -> str:
    """A one-way fingerprint of the pepper (reveals nothing of it, tells two peppers apart)."""
    return hmac.new(
        pepper.encode("utf-8"), b"qualitydesk-ingest pepper fingerprint v1", hashlib.sha256
    ).hexdigest()


async def check_pepper(conn: Conn, pepper: str) -> None:
    """Record the pepper's fingerprint on first use; refuse another pepper afterwards.

    Every objection is kept as HMAC(pepper, address): with another pepper none of them
    would match again, and every recorded objection would be silently void.
    """
    wanted = pepper_fingerprint(pepper)
    stored = await conn.fetchval(
        """
        WITH added AS (
            INSERT INTO ingest.settings (name, value) VALUES ($1, $2)
            ON CONFLICT (name) DO NOTHING RETURNING value
        )
        SELECT value FROM added UNION ALL SELECT value FROM ingest.settings WHERE name = $1
        """,
        PEPPER_FINGERPRINT,
        wanted,
    )
    if stored is not None and not hmac.compare_digest(str(stored), wanted):
        raise ConfigError(
            "INGEST_PEPPER: not the pepper this database was set up with (its fingerprint differs); "
            "with another pepper every recorded objection would stop matching. Set the original "
            "INGEST_PEPPER (rotation is not supported: docs/privacy.md)"
        )


async def has_settings(conn: Conn) -> bool:
    """Whether the settings table exists (a database migrated to 006 or later)."""
    present: bool = await conn.fetchval("SELECT to_regclass('ingest.settings') IS NOT NULL")
    return present
