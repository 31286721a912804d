"""The mailer of a serving process: started with the app, cancelled at shutdown (ingest/mail/)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from ingest.mail.mailer import Mailer, loop_is_busy, transport_for
from ingest.mail.transport import FileTransport
from ingest.web.keys import CONFIG, LIMITER, METRICS, PEPPER, POOL

log = structlog.get_logger("ingest.mail")
STOP_SECONDS = 5.0
BUSY_REQUESTS = 4  # requests in progress in this worker from which mail takes turns with them


async def mailing(app: web.Application) -> AsyncIterator[None]:
    """Send the outbox's mails while the app serves; say at start where they go."""
    config = app[CONFIG]
    transport = transport_for(config)
    if isinstance(transport, FileTransport):
        # The embedded default: no SMTP configured, so the mails are files a newcomer can open.
        log.warning("mail_written_as_files", directory=str(transport.directory))
    else:
        log.info("mail_via_smtp", host=config.mail.smtp_host, port=config.mail.smtp_port)
    limiter = app[LIMITER]

    async def busy() -> bool:
        # Several requests in progress, or a loop turn that keeps ready work waiting: one
        # slow upload alone does not hold the mail back.
        return limiter.concurrency.active >= BUSY_REQUESTS or await loop_is_busy()

    mailer = Mailer(config, app[POOL], app[PEPPER], transport, app[METRICS], busy=busy)
    stop = asyncio.Event()
    task = asyncio.create_task(mailer.run(stop))
    yield
    # Let a round in progress finish (a mail handed over is then recorded), within bounds.
    stop.set()
    try:
        await asyncio.wait_for(task, STOP_SECONDS)
    except TimeoutError:
        log.warning("mailer_stop_timed_out")  # cancelled: a leased mail goes again later
    with contextlib.suppress(asyncio.CancelledError):
        await task
