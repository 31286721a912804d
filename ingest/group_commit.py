"""Group commit: concurrent submissions are written together, one transaction per batch.

Each request still gets its answer only after the COMMIT that holds its row, or a
503 by its deadline: an item whose deadline has passed is answered 503 unwritten,
and no attempt of a batch may run past the earliest deadline it holds (the pool
wait, the feed lock and every statement are bounded by it). A batch that fails for
a reason other than the database being away is retried item by item, so one bad
row never fails the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from ingest.deadlines import DEADLINE_MARGIN_SECONDS
from ingest.domain import Envelope, Outcome
from ingest.errors import Unavailable
from ingest.store import ledger
from ingest.store.connection import (
    MIN_ATTEMPT_SECONDS,
    RETRY_DELAYS,
    TRANSIENT_ERRORS,
    Bounded,
    WriteHealth,
    bounded_transaction,
)
from ingest.store.submissions import write_submissions

log = structlog.get_logger("ingest.group_commit")

DEFAULT_DEADLINE_SECONDS = 3.0  # [limits] request_deadline_seconds
STOP_GRACE_SECONDS = 2.0  # past the last deadline, how long stop() waits for the writer to unwind


@dataclass(slots=True)
class _Pending:
    envelope: Envelope
    future: asyncio.Future[Outcome]
    arrived: float  # loop time
    deadline: float  # loop time: the writer's own answer is due by then


class GroupCommitWriter:
    """Collects envelopes from concurrent requests and commits them in batches."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        pepper: str,
        max_rows: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        self.pool = pool
        self.chain_key = ledger.chain_key(pepper)  # seals the consent events
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.deadline_seconds = deadline_seconds
        self.health = WriteHealth()
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()
        self._bounded = Bounded(pool, self.health, self._releasing)
        self._arrivals: deque[float] = deque()  # of the queued items, oldest first (FIFO like the queue)
        self._batch_arrived: float | None = None  # the oldest item of the batch being written

    def start(self) -> None:
        """Start the writer task."""
        self.task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Commit (or answer 503) everything already queued, then stop; within `drain_seconds`.

        Every queued item is answered by its own deadline, so the drain normally ends
        within one deadline; past `drain_seconds` what is left is answered 503 unwritten.
        """
        if drain_seconds is None:
            drain_seconds = self.deadline_seconds + STOP_GRACE_SECONDS
        try:
            await asyncio.wait_for(self.queue.join(), drain_seconds)
        except TimeoutError:
            log.warning("writer_drain_timed_out", count=self.queue.qsize())
        if self.task is not None:
            self.task.cancel()
            # Not an unbounded await: a cancelled attempt terminates its connection at once.
            await asyncio.wait({self.task}, timeout=STOP_GRACE_SECONDS)
            with contextlib.suppress(asyncio.CancelledError, asyncio.InvalidStateError):
                self.task.exception()  # retrieved, so nothing is logged as never retrieved
        while not self.queue.empty():
            _resolve(self.queue.get_nowait(), Unavailable())
        self._arrivals.clear()
        if self._releasing:  # connections back in the pool before it closes
            await asyncio.wait(self._releasing, timeout=STOP_GRACE_SECONDS)

    async def submit(self, envelope: Envelope, deadline: float | None = None) -> Outcome:
        """Queue an envelope; return its outcome once its batch has committed, or 503 by `deadline`."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + self.deadline_seconds if deadline is None else deadline
        future: asyncio.Future[Outcome] = loop.create_future()
        self.queue.put_nowait(_Pending(envelope, future, now, deadline - DEADLINE_MARGIN_SECONDS))
        self._arrivals.append(now)
        try:
            # The writer answers by deadline - margin; this is the backstop if it cannot.
            async with asyncio.timeout_at(deadline):
                return await future
        except TimeoutError:
            raise Unavailable from None

    def oldest_waiting(self) -> float | None:
        """The arrival (loop time) of the oldest item not yet answered: queued or being written."""
        queued = self._arrivals[0] if self._arrivals else None
        candidates = [t for t in (queued, self._batch_arrived) if t is not None]
        return min(candidates) if candidates else None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [self._get(await self.queue.get())]
            self._take_waiting(batch)
            # Gather while requests keep arriving, for at most max_wait: one turn of the
            # loop that brings nothing new means the rest are not ready yet, and waiting
            # on would leave the process idle with its batch in hand. (While a batch is
            # being written, the next one gathers in the queue anyway.)
            gather_until = loop.time() + self.max_wait
            while len(batch) < self.max_rows and loop.time() < gather_until:
                size = len(batch)
                await asyncio.sleep(0)
                self._take_waiting(batch)
                if len(batch) == size:
                    break
            self._batch_arrived = min(p.arrived for p in batch)
            try:
                await self._commit(batch)
            finally:
                self._batch_arrived = None
                for _ in batch:
                    self.queue.task_done()

    def _get(self, pending: _Pending) -> _Pending:
        if self._arrivals:
            self._arrivals.popleft()
        return pending

    def _take_waiting(self, batch: list[_Pending]) -> None:
        while len(batch) < self.max_rows:
            try:
                batch.append(self._get(self.queue.get_nowait()))
            except asyncio.QueueEmpty:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        live = [p for p in batch if not p.future.done()]  # a client may have gone away
        delays = iter(RETRY_DELAYS)
        while live := _answer_expired(live, loop.time()):
            # No attempt outlives the earliest deadline of the items it holds.
            earliest = min(p.deadline for p in live)
            try:
                outcomes = await bounded_transaction(
                    self._bounded, earliest, self._write([p.envelope for p in live])
                )
            except TRANSIENT_ERRORS:
                delay = next(delays, None)
                # Items that could not get another attempt in time are answered now.
                live = _answer_expired(live, float("inf") if delay is None else loop.time() + delay)
                if live and delay is not None:
                    await asyncio.sleep(delay)
                continue
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
            return

    async def _commit_alone(self, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        delays = iter(RETRY_DELAYS)
        while True:
            if not _answer_expired([pending], loop.time()):
                return
            try:
                [outcome] = await bounded_transaction(
                    self._bounded, pending.deadline, self._write([pending.envelope])
                )
            except TRANSIENT_ERRORS:
                delay = next(delays, None)
                if delay is None or not _answer_expired([pending], loop.time() + delay):
                    _resolve(pending, Unavailable())
                    return
                await asyncio.sleep(delay)
            except Exception as exc:  # noqa: BLE001 - handed to that request only
                _resolve(pending, exc)
                return
            else:
                _resolve(pending, outcome)
                return

    def _write(
        self, envelopes: list[Envelope]
    ) -> Callable[[asyncpg.pool.PoolConnectionProxy[Any]], Awaitable[list[Outcome]]]:
        async def write(conn: asyncpg.pool.PoolConnectionProxy[Any]) -> list[Outcome]:
            return await write_submissions(conn, envelopes, self.chain_key)

        return write


def _answer_expired(live: list[_Pending], at: float) -> list[_Pending]:
    """Answer 503 (unwritten) the items that cannot get an attempt before `at`; return the rest."""
    keep = []
    for pending in live:
        if pending.future.done():
            continue
        if pending.deadline - at < MIN_ATTEMPT_SECONDS:
            _resolve(pending, Unavailable())
        else:
            keep.append(pending)
    return keep


def _resolve(pending: _Pending, result: Outcome | BaseException) -> None:
    if pending.future.done():
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)
