"""The maintenance loop of a serving process: the retention purge, and the gauges that need the database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import structlog
from aiohttp import web

from ingest import retention
from ingest.store import chats, ledger_verify, requests
from ingest.store.leases import last_done
from ingest.web.keys import CONFIG, METRICS, PEPPER, POOL

log = structlog.get_logger("ingest.web")


async def maintenance(app: web.Application) -> AsyncIterator[None]:
    """Run the retention purge periodically and refresh the gauges that need the database."""
    task = asyncio.create_task(_maintenance_loop(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _maintenance_loop(app: web.Application) -> None:
    interval = app[CONFIG].limits.maintenance_interval_seconds
    metrics = app[METRICS]
    while True:
        await asyncio.sleep(interval)
        try:
            report = await retention.purge(app[POOL], datetime.now(UTC), "scheduler", app[PEPPER])
            metrics.purge_runs.labels("skipped" if "skipped_locked" in report else "done").inc()
            async with app[POOL].acquire() as conn:
                # Whichever replica purged: an alert fires when no purge completed for two intervals.
                if (done := await last_done(conn, retention.PURGE_LEASE)) is not None:
                    metrics.purge_last_completed.set(done.timestamp())
                metrics.overdue_requests.set(await requests.count_overdue(conn))
                for head in await ledger_verify.heads(conn):  # how long since a ledger row was written
                    metrics.ledger_head_updated.labels(head.chain).set(head.updated_at.timestamp())
                metrics.pending_chats.set(await chats.count_pending_chats(conn))
            log.info("maintenance_done", removed=report.get("contacts", 0))
        except Exception as exc:  # noqa: BLE001 - the loop must survive a failed run (DB away)
            metrics.purge_runs.labels("failed").inc()
            log.warning("maintenance_failed", exc_type=type(exc).__name__)
