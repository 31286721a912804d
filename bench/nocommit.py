"""`ingest` with the commit replaced by a no-op: the pipeline's own ceiling (bench row e).

Everything a request passes through runs as in production (HTTP, middleware, limits,
signature, strict parsing, validation, consent, the group-commit writer's batching),
except that a batch is answered "created" without touching PostgreSQL. Only the
benchmark starts it; the workers fork from this process and inherit the patch.

    .venv/bin/python bench/nocommit.py --config bench.toml serve --no-migrate

For the experiments docs/performance.md reports as tried: EXP_GC_OFF=1 turns the
garbage collector off, EXP_UVLOOP=1 runs on uvloop (pip install uvloop; not a dependency).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import group_commit  # noqa: E402
from ingest.cli.main import main  # noqa: E402
from ingest.domain import Outcome  # noqa: E402


async def _no_commit(self: group_commit.GroupCommitWriter, batch: list[group_commit._Pending]) -> None:
    for pending in batch:
        group_commit._resolve(pending, Outcome("created", submission_id=uuid.uuid4()))


group_commit.GroupCommitWriter._commit = _no_commit  # type: ignore[method-assign]

if os.environ.get("EXP_GC_OFF"):
    import gc

    gc.disable()
if os.environ.get("EXP_UVLOOP"):
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

if __name__ == "__main__":
    raise SystemExit(main())
