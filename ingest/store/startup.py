"""What a serving process checks in the database before it takes traffic.

The config's consent texts are stored (a changed wording under an old id refuses to
start), the pepper is the one the data was keyed with, and rows keyed the old way are
re-keyed. A database still starting is waited for, up to STARTUP_WAIT_SECONDS.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from ingest.config import Config
from ingest.errors import ConfigError, Unavailable
from ingest.store.connection import TRANSIENT_ERRORS
from ingest.store.consent_texts import ensure_consent_texts
from ingest.store.deliveries import rekey_legacy_deliveries
from ingest.store.settings import check_pepper, has_settings

log = structlog.get_logger("ingest.store")


STARTUP_WAIT_SECONDS = 30.0


async def sync_consent_texts(pool: asyncpg.Pool, config: Config, pepper: str | None = None) -> None:
    """Store the config's consent texts (refuse to start if an id's wording changed); re-key old rows."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_WAIT_SECONDS
    attempt = 0
    while True:
        try:
            async with pool.acquire() as conn:
                changed = await ensure_consent_texts(conn, list(config.consents.values()))
                migrated = await has_settings(conn)
                if pepper is not None and migrated:
                    await check_pepper(conn, pepper)
                    await rekey_legacy_deliveries(conn, pepper)
            break
        except TRANSIENT_ERRORS as exc:
            attempt += 1
            left = deadline - loop.time()
            if left <= 0:
                log.warning("database_unavailable_giving_up", attempt=attempt, exc_type=type(exc).__name__)
                raise Unavailable from None
            log.warning(
                "database_unavailable_retrying",
                attempt=attempt,
                seconds_left=round(left, 1),
                exc_type=type(exc).__name__,
            )
            await asyncio.sleep(1)
    if changed:
        raise ConfigError(
            f"consents.{changed[0]}: its text differs from the wording recorded under this id; "
            "new words need a new consent id"
        )
