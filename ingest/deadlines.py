"""The outer guard of every request that touches the database: an answer by its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from ingest.errors import Unavailable

T = TypeVar("T")
# The writer's own answer comes this long before the request's deadline, so that the
# answer committed-or-503 is decided by the writer, not by the outer guard (within()).
DEADLINE_MARGIN_SECONDS = 0.1


def loop_time() -> float:
    """The running loop's clock (the clock every deadline is on)."""
    return asyncio.get_running_loop().time()


_ABANDONED: set[asyncio.Future[Any]] = set()


async def within(deadline: float, work: Awaitable[T]) -> T:
    """Await `work` until `deadline` (loop time); past it, answer 503 and leave it to finish.

    The outer guard of every request that touches the database: whatever `work` is
    stuck in (a frozen server, a lock, a pool slot), the caller gets its answer on
    time. The abandoned work is cancelled, and kept referenced until it has unwound.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop_time()))
    except asyncio.CancelledError:
        _abandon_task(task)
        raise
    if task in done:
        return task.result()
    _abandon_task(task)
    raise Unavailable


def _abandon_task(task: asyncio.Future[Any]) -> None:
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody is waiting for it any more
