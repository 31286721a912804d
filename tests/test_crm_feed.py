"""The CRM feed never skips: the race a naive sequence has, the fix, and the consumer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from ingest.crm_tail import read_cursor, tail
from ingest.domain import RawSubmission
from ingest.service import IngestService
from ingest.store import locks
from tests.support import PEPPER

NOW = datetime.now(UTC)


async def _contact(conn) -> uuid.UUID:
    email = f"{uuid.uuid4().hex}@example.fi"
    return await conn.fetchval(
        "INSERT INTO ingest.contacts (email, email_key) VALUES ($1, $1) RETURNING contact_id", email
    )


async def _insert_submission(conn, contact_id) -> None:
    await conn.execute(
        """
        INSERT INTO ingest.submissions (submission_id, contact_id, source, channel, notice_version, received_at)
        VALUES ($1, $2, 's', 'form', 'v', $3)
        """,
        uuid.uuid4(),
        contact_id,
        NOW,
    )


async def test_without_the_feed_lock_a_poller_can_see_a_later_seq_before_an_earlier_one(db_dsn):
    # The race the lock exists for: A takes seq n, B takes n+1 and commits first.
    a, b, reader = [await asyncpg.connect(db_dsn) for _ in range(3)]
    try:
        contact = await _contact(reader)
        tx_a = a.transaction()
        await tx_a.start()
        await _insert_submission(a, contact)
        await _insert_submission(b, contact)  # autocommit
        visible = [r["seq"] for r in await reader.fetch("SELECT seq FROM crm.submissions ORDER BY seq")]
        assert len(visible) == 1  # B's larger seq is visible; A's smaller one is not yet
        await tx_a.commit()
        seqs = [r["seq"] for r in await reader.fetch("SELECT seq FROM crm.submissions ORDER BY seq")]
        assert visible[0] == max(seqs)  # a poller that advanced to it would skip A's row forever
    finally:
        for conn in (a, b, reader):
            await conn.close()


async def test_with_the_feed_lock_a_second_writer_waits_until_the_first_commits(db_dsn):
    a, b = [await asyncpg.connect(db_dsn) for _ in range(2)]
    try:
        contact = await _contact(a)
        tx_a = a.transaction()
        await tx_a.start()
        await locks.lock_feed(a)
        await _insert_submission(a, contact)

        async def writer_b() -> None:
            async with b.transaction():
                await locks.lock_feed(b)
                await _insert_submission(b, contact)

        task = asyncio.ensure_future(writer_b())
        await asyncio.sleep(0.3)
        assert not task.done()  # B cannot take a seq while A is in flight
        await tx_a.commit()
        await asyncio.wait_for(task, timeout=5)
    finally:
        await a.close()
        await b.close()


@pytest.fixture
async def service(db_dsn, config):
    pool = await asyncpg.create_pool(db_dsn, min_size=8, max_size=8)
    yield IngestService(config, pool, PEPPER)
    await pool.close()


async def _write(service: IngestService, config, count: int, tag: str) -> None:
    source = config.sources["partner-forms"]
    for i in range(count):
        raw = RawSubmission(fields={"email": f"{tag}-{i}@example.fi"}, delivery_id=f"{tag}-{i}")
        outcome = await service.accept(source, raw, NOW)
        assert outcome.status == "created"


async def _poll(db, seen: list[int], done: asyncio.Event) -> None:
    """Poll the feed as a consumer does (seq > last), until `done` and one more poll."""
    last = 0
    while True:
        finished = done.is_set()  # read before polling: the final poll sees everything
        rows = await db.fetch("SELECT seq FROM crm.submissions WHERE seq > $1 ORDER BY seq", last)
        seen.extend(r["seq"] for r in rows)
        if rows:
            last = rows[-1]["seq"]
        if finished:
            return
        await asyncio.sleep(0)


async def test_a_poller_sees_every_row_exactly_once_while_many_connections_write(service, config, db):
    seen: list[int] = []
    done = asyncio.Event()
    poller = asyncio.ensure_future(_poll(db, seen, done))
    await asyncio.gather(*(_write(service, config, 40, f"w{w}") for w in range(8)))
    done.set()
    await poller
    all_seqs = [r["seq"] for r in await db.fetch("SELECT seq FROM crm.submissions ORDER BY seq")]
    assert len(all_seqs) == 320
    assert seen == all_seqs  # every row, once, in order


async def test_the_example_consumer_resumes_after_a_restart_without_loss_or_duplication(
    service, config, db_dsn, tmp_path: Path
):
    cursor = tmp_path / "cursor"
    emitted: list[str] = []

    async def run_until(count: int) -> None:
        stop = asyncio.Event()

        def emit(row) -> None:
            emitted.append(str(row["submission_id"]))
            if len(emitted) >= count:
                stop.set()

        await asyncio.wait_for(tail(db_dsn, cursor, emit, stop, poll_seconds=0.2), timeout=30)

    await _write(service, config, 5, "first")
    await run_until(5)
    assert read_cursor(cursor) > 0
    await _write(service, config, 7, "second")  # written while the consumer is down
    writer = asyncio.ensure_future(_write(service, config, 3, "third"))  # and while it runs
    await run_until(15)
    await writer
    conn = await asyncpg.connect(db_dsn)
    try:
        stored = [
            str(r["submission_id"])
            for r in await conn.fetch("SELECT submission_id FROM crm.submissions ORDER BY seq")
        ]
    finally:
        await conn.close()
    assert emitted == stored


async def test_a_group_commit_batch_waits_for_the_feed_lock_like_a_single_write(db_dsn, config):
    from ingest.group_commit import GroupCommitWriter
    from ingest.store.startup import sync_consent_texts

    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
    holder = await asyncpg.connect(db_dsn)
    writer = GroupCommitWriter(pool, PEPPER, max_rows=50, max_wait_ms=5)
    writer.start()
    try:
        await sync_consent_texts(pool, config)
        service = IngestService(config, pool, PEPPER, writer)
        source = config.sources["partner-forms"]
        tx = holder.transaction()
        await tx.start()
        await locks.lock_feed(holder)
        raws = [
            RawSubmission(fields={"email": f"lock-{i}@example.fi"}, delivery_id=f"lock-{i}") for i in range(5)
        ]
        batch = asyncio.gather(*(service.accept(source, raw, NOW) for raw in raws))
        await asyncio.sleep(0.3)
        assert not batch.done()  # the batch cannot take seq values while another writer holds the lock
        await tx.commit()
        outcomes = await asyncio.wait_for(batch, timeout=5)
        assert [o.status for o in outcomes] == ["created"] * 5
    finally:
        await writer.stop()
        await holder.close()
        await pool.close()


async def test_a_poller_sees_every_row_once_while_several_group_commit_writers_write(db_dsn, config, db):
    # Several workers (or replicas) each run a writer: their batches interleave.
    from ingest.group_commit import GroupCommitWriter
    from ingest.store.startup import sync_consent_texts

    pool = await asyncpg.create_pool(db_dsn, min_size=4, max_size=8)
    batches: list[int] = []
    writers = [
        GroupCommitWriter(pool, PEPPER, max_rows=7, max_wait_ms=1, on_batch=batches.append) for _ in range(4)
    ]
    for writer in writers:
        writer.start()
    seen: list[int] = []
    done = asyncio.Event()
    try:
        await sync_consent_texts(pool, config)
        services = [IngestService(config, pool, PEPPER, writer) for writer in writers]
        poller = asyncio.ensure_future(_poll(db, seen, done))
        source = config.sources["partner-forms"]
        await asyncio.gather(
            *(
                service.accept(source, RawSubmission(fields={"email": f"g{n}-{i}@example.fi"}), NOW)
                for i in range(60)
                for n, service in enumerate(services)
            )
        )
        done.set()
        await poller
    finally:
        for writer in writers:
            await writer.stop()
        await pool.close()
    all_seqs = [r["seq"] for r in await db.fetch("SELECT seq FROM crm.submissions ORDER BY seq")]
    assert len(all_seqs) == 240
    assert seen == all_seqs
    assert max(batches) > 1  # the batched statement, not the one-row path, wrote them
