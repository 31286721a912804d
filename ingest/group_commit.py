"""Group commit: concurrent submissions are written together, one transaction per batch.

Each request still gets its answer only after the COMMIT that holds its row.
A batch that fails for a reason other than the database being away is retried
item by item, so one bad row never fails the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from ingest.domain import Envelope, Outcome
from ingest.errors import Unavailable
from ingest.service import with_retries
from ingest.store.submissions import write_submissions

log = structlog.get_logger("ingest.group_commit")


@dataclass(slots=True)
class _Pending:
    envelope: Envelope
    future: asyncio.Future[Outcome]


class GroupCommitWriter:
    """Collects envelopes from concurrent requests and commits them in batches."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        pepper: str,
        max_rows: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.pool = pool
        self.pepper = pepper
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the writer task."""
        self.task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commit everything already queued, then stop."""
        await self.queue.join()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await asyncio.gather(*self._releasing)  # connections back in the pool before it closes

    async def submit(self, envelope: Envelope) -> Outcome:
        """Queue an envelope; return its outcome once its batch has committed."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Pending(envelope, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            self._take_waiting(batch)
            if len(batch) < self.max_rows and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
                self._take_waiting(batch)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self.queue.task_done()

    def _take_waiting(self, batch: list[_Pending]) -> None:
        while len(batch) < self.max_rows:
            try:
                batch.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client may have gone away
        if not live:
            return
        envelopes = [p.envelope for p in live]
        try:
            outcomes = await with_retries(lambda: self._write(envelopes))
        except Unavailable:
            for pending in live:
                _resolve(pending, Unavailable())
            return
        except Exception as exc:  # noqa: BLE001 - isolate: retry each item on its own
            if len(live) == 1:
                _resolve(live[0], exc)
                return
            log.warning("batch_failed_retrying_items", batch_size=len(live), exc_type=type(exc).__name__)
            for pending in live:
                await self._commit_alone(pending)
            return
        for pending, outcome in zip(live, outcomes, strict=True):
            _resolve(pending, outcome)
        if self.on_batch:
            self.on_batch(len(live))

    async def _commit_alone(self, pending: _Pending) -> None:
        envelope = pending.envelope
        try:
            [outcome] = await with_retries(lambda: self._write([envelope]))
        except Exception as exc:  # noqa: BLE001 - handed to that request only
            _resolve(pending, exc)
        else:
            _resolve(pending, outcome)

    async def _write(self, envelopes: list[Envelope]) -> list[Outcome]:
        conn = await self.pool.acquire()
        try:
            async with conn.transaction():
                return await write_submissions(conn, envelopes, self.pepper)
        finally:
            self._release(conn)

    def _release(self, conn: asyncpg.pool.PoolConnectionProxy[Any]) -> None:
        # The pool resets a connection on release: one more round trip that the answers
        # need not wait for. And a failure there must not look like a failed write: the
        # batch has committed, and retrying it would store its rows twice.
        task = asyncio.create_task(self._release_quietly(conn))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release_quietly(self, conn: asyncpg.pool.PoolConnectionProxy[Any]) -> None:
        try:
            await self.pool.release(conn)
        except Exception as exc:  # noqa: BLE001 - the pool has already dropped the connection
            log.warning("connection_release_failed", exc_type=type(exc).__name__)


def _resolve(pending: _Pending, result: Outcome | BaseException) -> None:
    if pending.future.done():
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)
