"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingest import errors, migrations
from ingest.web.keys import METRICS, POOL

READY_TIMEOUT_SECONDS = 2.0


async def healthz(_: web.Request) -> web.Response:
    """The process is alive and serving."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers and carries every migration."""
    pool = request.app[POOL]
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS), pool.acquire() as conn:
            current = await migrations.is_current(conn)
    except Exception:  # noqa: BLE001 - any failure to reach the database means "not ready"
        raise errors.Unavailable from None
    if not current:
        return web.json_response(
            {"error": "unavailable", "reason": "not_migrated"}, status=503, headers={"Retry-After": "5"}
        )
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition."""
    registry = request.app[METRICS]
    pool = request.app[POOL]
    registry.pool_in_use.set(pool.get_size() - pool.get_idle_size())
    body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
