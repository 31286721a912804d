"""The application factory: routes, middleware, and resources in cleanup_ctx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from ingest import repository
from ingest.config import Config
from ingest.errors import ConfigError
from ingest.metrics import create_metrics
from ingest.service import TRANSIENT_ERRORS, IngestService
from ingest.web import health, intake
from ingest.web.keys import CONFIG, DSN, METRICS, PEPPER, POOL, SERVICE
from ingest.web.middleware import request_context

log = structlog.get_logger("ingest.app")

STARTUP_WAIT_SECONDS = 30.0


def create_app(config: Config, dsn: str, pepper: str) -> web.Application:
    """Build the aiohttp application; the pool opens and closes with it."""
    app = web.Application(middlewares=[request_context], client_max_size=config.limits.max_body_bytes)
    app[CONFIG] = config
    app[DSN] = dsn
    app[PEPPER] = pepper
    app[METRICS] = create_metrics()
    app.cleanup_ctx.append(database)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_post("/v1/{kind:forms|chats}/{source}", intake.receive)
    app.router.add_route("OPTIONS", "/v1/{kind:forms|chats}/{source}", intake.preflight)
    return app


async def database(app: web.Application) -> AsyncIterator[None]:
    """Open the pool, check consent texts against the database, close on shutdown."""
    config = app[CONFIG]
    pool = await asyncpg.create_pool(
        app[DSN],
        min_size=0,
        max_size=10,
        command_timeout=10,
        timeout=5,
        max_inactive_connection_lifetime=60,
    )
    try:
        await sync_consent_texts(pool, config)
        app[POOL] = pool
        app[SERVICE] = IngestService(config, pool, app[PEPPER])
        yield
    finally:
        await pool.close()


async def sync_consent_texts(pool: asyncpg.Pool, config: Config) -> None:
    """Store the config's consent texts; refuse to start if an id's wording changed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_WAIT_SECONDS
    while True:
        try:
            async with pool.acquire() as conn:
                changed = await repository.ensure_consent_texts(conn, list(config.consents.values()))
            break
        except TRANSIENT_ERRORS:
            if loop.time() > deadline:
                raise
            log.warning("database_not_ready")
            await asyncio.sleep(1)
    if changed:
        raise ConfigError(
            f"consents.{changed[0]}: its text differs from the wording recorded under this id; "
            "new words need a new consent id"
        )
