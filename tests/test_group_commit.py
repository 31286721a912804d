"""Group commit: batches commit together, de-duplicate, and isolate a bad row."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from ingest.domain import Envelope, RawSubmission, Submission
from ingest.group_commit import GroupCommitWriter
from ingest.service import IngestService
from tests.support import PEPPER

NOW = datetime.now(UTC)


@pytest.fixture
async def pool(db_dsn, config):
    from ingest.store.startup import sync_consent_texts

    pool = await asyncpg.create_pool(db_dsn, min_size=2, max_size=4)
    await sync_consent_texts(pool, config)
    yield pool
    await pool.close()


@pytest.fixture
async def writer(pool):
    batches: list[int] = []
    writer = GroupCommitWriter(pool, PEPPER, max_rows=50, max_wait_ms=20, on_batch=batches.append)
    writer.start()
    writer.batches = batches  # type: ignore[attr-defined]
    yield writer
    await writer.stop()


def envelope(service: IngestService, config, delivery: str | None = None, **fields):
    raw = RawSubmission(fields=fields, delivery_id=delivery, consents={"marketing-email-v1": True})
    prepared = service.prepare(config.sources["partner-forms"], raw, NOW)
    assert isinstance(prepared, Envelope)
    return prepared


async def test_concurrent_submissions_are_committed_in_one_batch(writer, pool, config, db):
    service = IngestService(config, pool, PEPPER, writer)
    envelopes = [
        envelope(service, config, f"d{i}", email=f"p{i}@example.fi", name=f"P {i}") for i in range(30)
    ]
    outcomes = await asyncio.gather(*(writer.submit(e) for e in envelopes))
    assert [o.status for o in outcomes] == ["created"] * 30
    assert writer.batches == [30]
    rows = await db.fetch(
        "SELECT s.submission_id, c.email FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert {str(r["submission_id"]) for r in rows} == {str(o.submission_id) for o in outcomes}
    assert await db.fetchval("SELECT count(*) FROM ingest.consent_events") == 30
    assert await db.fetchval("SELECT count(*) FROM ingest.submission_purposes") == 60


async def test_a_delivery_repeated_inside_one_batch_is_one_submission(writer, pool, config, db):
    service = IngestService(config, pool, PEPPER, writer)
    same = envelope(service, config, "same", email="maija@example.fi")
    outcomes = await asyncio.gather(*(writer.submit(same) for _ in range(5)))
    assert sorted(o.status for o in outcomes) == ["created"] + ["duplicate"] * 4
    assert len({o.submission_id for o in outcomes}) == 1
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1


async def test_a_delivery_seen_in_an_earlier_batch_is_a_duplicate(writer, pool, config, db):
    service = IngestService(config, pool, PEPPER, writer)
    first = await writer.submit(envelope(service, config, "d1", email="a@example.fi"))
    again = await asyncio.gather(
        writer.submit(envelope(service, config, "d1", email="a@example.fi")),
        writer.submit(envelope(service, config, "d2", email="b@example.fi")),
    )
    assert again[0].status == "duplicate"
    assert again[0].submission_id == first.submission_id
    assert again[1].status == "created"


async def test_the_same_person_twice_in_a_batch_is_one_contact(writer, pool, config, db):
    service = IngestService(config, pool, PEPPER, writer)
    await asyncio.gather(
        writer.submit(envelope(service, config, "x1", email="Maija@example.fi", name="Maija")),
        writer.submit(envelope(service, config, "x2", email="maija@EXAMPLE.fi", phone="040 123 4567")),
        writer.submit(envelope(service, config, "x3", phone="+358 50 111 2222", name="Pekka")),
        writer.submit(envelope(service, config, "x4", phone="050 111 2222")),
    )
    contacts = await db.fetch("SELECT name, email, phone FROM crm.contacts ORDER BY name")
    assert [tuple(r) for r in contacts] == [
        ("Maija", "Maija@example.fi", "+358401234567"),
        ("Pekka", None, "+358501112222"),
    ]
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 4


async def test_one_bad_row_does_not_fail_the_others(writer, pool, config, db):
    service = IngestService(config, pool, PEPPER, writer)
    good = [envelope(service, config, f"g{i}", email=f"g{i}@example.fi") for i in range(5)]
    # Past every check in Python, refused by the database (message over 5000 characters).
    # Built by the service (which computes its keyed hashes), skipping validation.
    raw = RawSubmission(fields={}, delivery_id="bad", consents={"marketing-email-v1": True})
    bad_submission = Submission(None, "bad@example.fi", None, "x" * 6000)
    bad = service.envelope(config.sources["partner-forms"], raw, bad_submission, NOW)
    results = await asyncio.gather(*(writer.submit(e) for e in [*good, bad]), return_exceptions=True)
    assert [r.status for r in results[:5]] == ["created"] * 5
    assert isinstance(results[5], asyncpg.CheckViolationError)
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 5
    assert await db.fetchval("SELECT count(*) FROM ingest.deliveries WHERE delivery_id = 'bad'") == 0


async def test_stop_commits_what_is_queued_before_returning(pool, config, db):
    writer = GroupCommitWriter(pool, PEPPER, max_rows=10, max_wait_ms=50)
    writer.start()
    service = IngestService(config, pool, PEPPER, writer)
    tasks = [
        asyncio.ensure_future(writer.submit(envelope(service, config, f"s{i}", email=f"s{i}@example.fi")))
        for i in range(25)
    ]
    await asyncio.sleep(0)
    await writer.stop()
    assert all(t.done() and t.result().status == "created" for t in tasks)
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 25


async def test_batch_max_rows_one_is_the_plain_per_request_path(make_client, db):
    import json

    from tests.support import base_config_dict, make_config, sign_standard

    raw = base_config_dict()
    raw["limits"] = {"batch_max_rows": 1}
    client = await make_client(make_config(raw))
    from ingest.web.keys import SERVICE

    assert client.app[SERVICE].writer is None
    body = json.dumps({"email": "m@example.fi"}).encode()
    assert (
        await client.post("/v1/forms/partner-forms", data=body, headers=sign_standard(body))
    ).status == 201


class ReleaseFailsOnce:
    """The pool, except that handing a connection back fails once, after the work is done."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.failures = 0

    def acquire(self, timeout: float | None = None) -> _Acquire:
        """Take a connection from the real pool."""
        return _Acquire(self, timeout)

    async def release(self, conn, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's keyword
        """Hand the connection back, then fail the first time."""
        await self.pool.release(conn, timeout=timeout)
        if not self.failures:
            self.failures += 1
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")


class _Acquire:
    """Like the pool's: awaited, or used with `async with` (which releases through the wrapper)."""

    def __init__(self, flaky: ReleaseFailsOnce, timeout: float | None) -> None:
        self.flaky = flaky
        self.timeout = timeout
        self.conn = None

    def __await__(self):
        return self.flaky.pool.acquire(timeout=self.timeout).__await__()

    async def __aenter__(self):
        self.conn = await self.flaky.pool.acquire()
        return self.conn

    async def __aexit__(self, *_) -> None:
        await self.flaky.release(self.conn)


async def test_a_failure_handing_the_connection_back_after_commit_never_writes_the_batch_twice(
    pool, config, db
):
    # Fault injection: returning the connection fails once, after COMMIT. Browser
    # posts carry no delivery id, so a retry of the committed batch would store every
    # row twice; the answers must come from the one commit.
    flaky = ReleaseFailsOnce(pool)
    writer = GroupCommitWriter(flaky, PEPPER, max_rows=10, max_wait_ms=20)  # type: ignore[arg-type]
    writer.start()
    try:
        service = IngestService(config, pool, PEPPER, writer)
        outcomes = await asyncio.gather(
            *(writer.submit(envelope(service, config, None, email=f"h{i}@example.fi")) for i in range(4))
        )
    finally:
        await writer.stop()
    assert flaky.failures == 1  # the fault did fire
    assert [o.status for o in outcomes] == ["created"] * 4
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 4
    stored = {r["submission_id"] for r in await db.fetch("SELECT submission_id FROM ingest.submissions")}
    assert stored == {o.submission_id for o in outcomes}


class DatabaseAway:
    """A pool whose every connection attempt is refused, counting the attempts."""

    def __init__(self) -> None:
        self.attempts = 0

    async def acquire(self, timeout: float | None = None):  # noqa: ASYNC109, ARG002 - asyncpg's keyword
        """Fail as a refused connection does."""
        self.attempts += 1
        raise ConnectionRefusedError("connection refused")


class DatabaseFrozen:
    """A pool whose connection attempts never return (a server stopped with SIGSTOP)."""

    async def acquire(self, timeout: float | None = None):  # noqa: ASYNC109 - asyncpg's keyword
        """Wait for as long as asked (forever, without a timeout)."""
        await asyncio.sleep(3600 if timeout is None else timeout)
        raise TimeoutError


async def test_an_item_past_its_deadline_is_answered_503_without_being_written(pool, config, db):
    from ingest.errors import Unavailable

    writer = GroupCommitWriter(pool, PEPPER, max_rows=10, max_wait_ms=20)
    writer.start()
    try:
        service = IngestService(config, pool, PEPPER, writer)
        late = envelope(service, config, "late", email="late@example.fi")
        loop = asyncio.get_running_loop()
        with pytest.raises(Unavailable):
            await writer.submit(late, deadline=loop.time() - 0.01)
        on_time = await writer.submit(envelope(service, config, "ok", email="ok@example.fi"))
    finally:
        await writer.stop()
    assert on_time.status == "created"
    assert await db.fetchval("SELECT count(*) FROM ingest.deliveries WHERE delivery_id = 'late'") == 0
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1


async def test_a_batch_retries_only_until_its_earliest_deadline(config):
    # Before: the whole retry budget (about 2.2 s) ran for every batch, one batch after another.
    from ingest.errors import Unavailable

    away = DatabaseAway()
    writer = GroupCommitWriter(away, PEPPER, max_rows=10, max_wait_ms=1)  # type: ignore[arg-type]
    writer.start()
    service = IngestService(config, away, PEPPER, writer)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        results = await asyncio.gather(
            writer.submit(envelope(service, config, "a", email="a@example.fi"), deadline=started + 0.3),
            writer.submit(envelope(service, config, "b", email="b@example.fi"), deadline=started + 0.3),
            return_exceptions=True,
        )
        seconds = loop.time() - started
    finally:
        await writer.stop()
    assert all(isinstance(r, Unavailable) for r in results)
    assert away.attempts >= 2  # it did retry
    assert seconds < 1.5, f"answered after {seconds:.2f} s"
    assert writer.health.failing


async def test_stop_with_the_database_frozen_answers_503_and_returns(config):
    from ingest.errors import Unavailable

    frozen = DatabaseFrozen()
    writer = GroupCommitWriter(frozen, PEPPER, max_rows=10, max_wait_ms=1)  # type: ignore[arg-type]
    writer.start()
    service = IngestService(config, frozen, PEPPER, writer)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    pending = asyncio.ensure_future(
        writer.submit(envelope(service, config, "f", email="f@example.fi"), deadline=loop.time() + 0.5)
    )
    await asyncio.sleep(0.05)  # the writer is waiting for a connection
    started = loop.time()
    await writer.stop()
    assert loop.time() - started < 0.5 + 3
    assert isinstance(pending.exception(), Unavailable)
    assert writer.task is not None and writer.task.done()


async def test_a_lone_submission_is_not_held_for_the_whole_gathering_window(pool, config, db):
    # batch_max_wait_ms bounds the gathering; a loop turn that brings nothing new ends it,
    # so a quiet service commits at once rather than idling out the window (2 s here).
    writer = GroupCommitWriter(pool, PEPPER, max_rows=50, max_wait_ms=2000)
    writer.start()
    try:
        service = IngestService(config, pool, PEPPER, writer)
        started = time.perf_counter()
        outcome = await writer.submit(envelope(service, config, "lone", email="lone@example.fi"))
        elapsed = time.perf_counter() - started
    finally:
        await writer.stop()
    assert outcome.status == "created"
    assert elapsed < 0.2  # 10x under the window it used to wait out
