"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from ingest import errors
from ingest.deadlines import within
from ingest.web.keys import METRICS, POOL, SERVICE

READY_TIMEOUT_SECONDS = 1.0


async def healthz(_: web.Request) -> web.Response:
    """The process is alive and serving."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers, carries every migration, and writes get through; answered within 1 s."""
    service = request.app[SERVICE]
    # Well under the request deadline, and under a probe's usual 1 s timeout.
    budget = min(READY_TIMEOUT_SECONDS, service.deadline_seconds / 2)
    deadline = asyncio.get_running_loop().time() + budget
    current: bool | None
    try:
        current = await within(deadline, service.check_ready(deadline - 0.05))
    except Exception:  # noqa: BLE001 - any failure to reach the database means "not ready"
        current = None
    reason = "not_migrated" if current is False else service.not_ready_reason()
    if reason is None and current is None:
        raise errors.Unavailable
    if reason is not None:
        return web.json_response(
            {"error": "unavailable", "reason": reason}, status=503, headers={"Retry-After": "5"}
        )
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition: the service's totals, whichever worker answers."""
    registry = request.app[METRICS]
    pool = request.app[POOL]
    registry.pool_in_use.set(pool.get_size() - pool.get_idle_size())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Served (ingest serve): every worker's and the arbiter's values, read from the
        # multiprocess directory (file reads: off the event loop).
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        body = await asyncio.to_thread(generate_latest, combined)
    else:
        body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
