"""The mailer: sends what the outbox holds, at least once, and forgets each mail once it went.

Every serving process runs one. A round leases due rows (FOR UPDATE SKIP LOCKED, so two
senders never take the same mail), composes and hands each over, then records it sent
(forgetting recipient and wording) or due again after a back-off; a permanent refusal
or too many attempts gives it up. A sender that dies between handing a mail over and
recording it leaves the lease to expire: the mail goes again, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import structlog

from ingest.config import Config
from ingest.mail.compose import compose
from ingest.mail.transport import (
    FileTransport,
    PermanentFailure,
    SmtpSettings,
    SmtpTransport,
    Transport,
    TransportError,
)
from ingest.metrics import Metrics
from ingest.store import outbox

log = structlog.get_logger("ingest.mail")

# The delay before attempt 2, 3, ..., in multiples of [mail] first_retry_seconds (30 s by
# default: then about two days in all), after which the mail is given up.
BACKOFF = (1, 4, 20, 60, 120, 360, 720, 1440, 1440)
MAX_ATTEMPTS = len(BACKOFF) + 1
BATCH = 20
MAIL_YIELD = 3  # under request load, mail gets at most a quarter of the process (pause_after)
BUSY_TURN_SECONDS = 0.005  # an event loop turn longer than this: requests wait for the CPU
SEND_SECONDS = 35.0  # one hand-over at most (the SMTP timeout is 30 s): a lease covers its batch
# The .eml files of the embedded default hold addresses: kept a week, then deleted.
FILE_MAIL_DAYS = 7
FILE_SWEEP_SECONDS = 3600.0
MAIL_DIR_ENV = "INGEST_MAIL_DIR"
DEFAULT_MAIL_DIR = Path(".ingest-data") / "mail"


def transport_for(config: Config) -> Transport:
    """SMTP when [mail] smtp_host is set; else .eml files (INGEST_MAIL_DIR, else [mail] directory)."""
    mail = config.mail
    if mail.smtp_host:
        return SmtpTransport(
            SmtpSettings(
                host=mail.smtp_host,
                port=mail.smtp_port,
                security=mail.smtp_security,
                username=mail.smtp_username,
                password=mail.smtp_password,
            )
        )
    directory = os.environ.get(MAIL_DIR_ENV) or mail.directory or str(DEFAULT_MAIL_DIR)
    return FileTransport(Path(directory).resolve())


class Mailer:
    """Sends the outbox's due mails through one transport."""

    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool,
        pepper: str,
        transport: Transport,
        metrics: Metrics | None = None,
        busy: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.pepper = pepper
        self.transport = transport
        self.metrics = metrics
        self.settings = config.mail
        self.busy = busy  # whether this worker is busy serving requests (web/mailing.py)

    async def run_once(self) -> int:
        """One round: lease due mails, send each, record the outcome; return how many were tried."""
        async with self.pool.acquire() as conn, conn.transaction():
            # No more than the lease covers: a batch still sending when its lease ran out
            # would be taken (and sent) again by another sender.
            limit = max(1, min(BATCH, int(self.settings.lease_seconds // SEND_SECONDS)))
            rows = await outbox.claim(conn, limit, self.settings.lease_seconds)
        for row in rows:
            await self._send(row)
        return len(rows)

    async def _send(self, row: asyncpg.Record) -> None:
        kind = row["kind"]
        try:
            message = compose(self.config, self.pepper, row)
            await self.transport.send(message)
        except PermanentFailure as exc:
            await self._finish(row, "failed", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one bad mail (or a full disk) never stops the others
            error = str(exc) if isinstance(exc, TransportError) else type(exc).__name__
            if row["attempts"] >= MAX_ATTEMPTS:
                await self._finish(row, "failed", error)
                return
            delay = BACKOFF[min(row["attempts"], len(BACKOFF)) - 1] * self.settings.first_retry_seconds
            async with self.pool.acquire() as conn:
                await outbox.retry_later(conn, row["mail_id"], delay, error[:120])
            self._count(kind, "retry")
            log.warning("mail_retry", kind=kind, mail_id=row["mail_id"], attempt=row["attempts"], error=error)
            return
        await self._finish(row, "sent", None)

    async def _finish(self, row: asyncpg.Record, state: str, error: str | None) -> None:
        async with self.pool.acquire() as conn:
            await outbox.finish(conn, row["mail_id"], state, error[:120] if error else None)
        self._count(row["kind"], state)
        event = "mail_sent" if state == "sent" else "mail_given_up"
        log.info(event, kind=row["kind"], mail_id=row["mail_id"], attempts=row["attempts"], error=error)

    def _count(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.mails.labels(kind, outcome).inc()

    async def refresh_gauges(self) -> None:
        """Outbox depth and the oldest waiting mail's age, for /metrics and the stuck-mail alert."""
        if self.metrics is None:
            return
        async with self.pool.acquire() as conn:
            waiting, age = await outbox.depth(conn)
        self.metrics.outbox_depth.set(waiting)
        self.metrics.outbox_oldest_age.set(age)

    def sweep_files(self, now: float | None = None) -> int:
        """Delete the .eml files (the embedded default's mails) older than FILE_MAIL_DAYS."""
        if not isinstance(self.transport, FileTransport):
            return 0
        cutoff = (time.time() if now is None else now) - FILE_MAIL_DAYS * 86400
        removed = 0
        for path in self.transport.directory.glob("*.eml"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set (between rounds); a failed round (the database away) is retried."""
        swept: float | None = None
        while not stop.is_set():
            if swept is None or time.monotonic() - swept > FILE_SWEEP_SECONDS:
                swept = time.monotonic()
                await asyncio.to_thread(self.sweep_files)
            started = time.monotonic()
            try:
                tried = await self.run_once()
                await self.refresh_gauges()
            except Exception as exc:  # noqa: BLE001 - the loop outlives a failed round (DB away, failover)
                log.warning("mailer_round_failed", exc_type=type(exc).__name__)
                tried = 0
            took = time.monotonic() - started
            busy = bool(tried) and self.busy is not None and await self.busy()
            pause = self.pause_after(tried, took, busy=busy)
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    def pause_after(self, tried: int, took: float, *, busy: bool) -> float:
        """How long to wait before the next round: a poll when nothing was due.

        While the process is busy serving requests, a round that sent mail is followed
        by a pause MAIL_YIELD times its own length: mail then takes at most
        1/(1 + MAIL_YIELD) of the process under load, and a burst of submissions is not
        slowed by the mails it causes (they wait in the outbox, which keeps them, and go
        when it is quiet).
        """
        if not tried:
            return self.settings.poll_seconds
        if busy:
            return min(self.settings.poll_seconds, took * MAIL_YIELD)
        return 0.0


async def loop_is_busy() -> bool:
    """Whether one turn of the event loop takes longer than BUSY_TURN_SECONDS.

    A turn runs every request that is ready: a long one means requests are waiting
    for the CPU. Requests merely in progress (a slow upload, a wait on the database)
    make no turn long, so they do not slow the mail.
    """
    started = time.monotonic()
    await asyncio.sleep(0)
    return time.monotonic() - started > BUSY_TURN_SECONDS
