"""An example CRM consumer: LISTEN for wake-ups, read the feed from a stored cursor.

It reads only the crm views (run it as a role granted crm_reader), resumes from
the cursor file after a restart, and stays correct if a notification is lost
(it also polls). A crash between emitting a batch and saving the cursor replays
that batch on restart, so whatever it forwards to should de-duplicate by
submission_id (an upsert); a clean stop loses and repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from ingest.store import feed

BATCH = 500
POLL_SECONDS = 5.0


def read_cursor(path: Path) -> int:
    """The last seq handled (0 when starting)."""
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0


def write_cursor(path: Path, seq: int) -> None:
    """Save the cursor atomically (write, fsync, rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as handle:
        handle.write(str(seq))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def as_json(row: asyncpg.Record) -> str:
    """One submission as a JSON line."""
    data: dict[str, Any] = dict(row)
    return json.dumps(data, default=str, ensure_ascii=False)


async def tail(
    dsn: str,
    cursor_path: Path,
    emit: Callable[[asyncpg.Record], None],
    stop: asyncio.Event,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Emit every new crm.submissions row exactly once, in seq order, until `stop` is set."""
    conn = await asyncpg.connect(dsn)
    wake = asyncio.Event()
    await conn.add_listener(feed.NOTIFY_CHANNEL, lambda *_: wake.set())
    last = read_cursor(cursor_path)
    try:
        while not stop.is_set():
            wake.clear()  # before reading: a notification during the read is not lost
            rows = await feed.submissions_after(conn, last, BATCH)
            for row in rows:
                emit(row)
            if rows:
                last = rows[-1]["seq"]
                write_cursor(cursor_path, last)
            if len(rows) < BATCH:
                await _wait_any(wake, stop, poll_seconds)
    finally:
        await conn.close()


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
