"""Group commit: concurrent submissions are written together, one transaction per batch.

Each request still gets its answer only after the COMMIT that holds its row.
A batch that fails for a reason other than the database being away is retried
item by item, so one bad row never fails the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from ingest import repository
from ingest import repository_batch as batch_sql
from ingest.domain import Envelope, Outcome
from ingest.errors import Unavailable
from ingest.pseudonyms import email_key, phone_key
from ingest.service import with_retries, write_envelope

log = structlog.get_logger("ingest.group_commit")


@dataclass(slots=True)
class _Pending:
    envelope: Envelope
    future: asyncio.Future[Outcome]


@dataclass(slots=True)
class _Plan:
    """The batch after de-duplication: which items are new, which repeat an earlier one."""

    ids: list[uuid.UUID]
    repeats: dict[int, int] = field(default_factory=dict)  # index -> index of its first occurrence
    firsts: list[int] = field(default_factory=list)


async def write_batch(conn: repository.Conn, envelopes: list[Envelope], pepper: str) -> list[Outcome]:
    """All statements of a batch inside the caller's transaction; outcomes in batch order."""
    plan = _plan(envelopes)
    outcomes: list[Outcome | None] = [None] * len(envelopes)
    keyed = [i for i in plan.firsts if envelopes[i].delivery_id is not None]
    seen = await batch_sql.claim_deliveries(
        conn,
        [envelopes[i].source for i in keyed],
        [envelopes[i].delivery_id or "" for i in keyed],
        [plan.ids[i] for i in keyed],
    )
    new = []
    for i in plan.firsts:
        env = envelopes[i]
        earlier = seen.get((env.source, env.delivery_id or "")) if env.delivery_id else None
        if earlier is not None:
            outcomes[i] = Outcome("duplicate", submission_id=earlier)
        else:
            new.append(i)
    if new:
        contacts = await _upsert_contacts(conn, [envelopes[i] for i in new], pepper)
        await _insert_rows(conn, envelopes, new, plan.ids, contacts)  # takes the feed lock
        for i in new:
            outcomes[i] = Outcome("created", submission_id=plan.ids[i])
    for i, first in plan.repeats.items():
        first_outcome = outcomes[first]
        assert first_outcome is not None  # noqa: S101 - firsts are all decided above
        outcomes[i] = Outcome("duplicate", submission_id=first_outcome.submission_id)
    return [o for o in outcomes if o is not None]


def _plan(envelopes: list[Envelope]) -> _Plan:
    plan = _Plan(ids=[uuid.uuid4() for _ in envelopes])
    first_of: dict[tuple[str, str], int] = {}
    for i, env in enumerate(envelopes):
        if env.delivery_id is not None:
            key = (env.source, env.delivery_id)
            if key in first_of:
                plan.repeats[i] = first_of[key]
                continue
            first_of[key] = i
        plan.firsts.append(i)
    return plan


def _contact_key(env: Envelope) -> str:
    data = env.submission
    return f"e:{data.email.lower()}" if data.email else f"p:{data.phone}"


async def _upsert_contacts(
    conn: repository.Conn, envelopes: list[Envelope], pepper: str
) -> dict[str, uuid.UUID]:
    """One row per person in the batch (later values win), upserted in two statements."""
    merged: dict[str, Envelope] = {}  # contact key -> its first envelope in the batch
    names: dict[str, str | None] = {}
    phones: dict[str, str | None] = {}
    seen: dict[str, datetime] = {}
    for env in envelopes:
        key = _contact_key(env)
        merged.setdefault(key, env)  # the first spelling of the address is kept, as one by one
        seen[key] = max(seen.get(key, env.received_at), env.received_at)
        names[key] = env.submission.name or names.get(key)
        phones[key] = env.submission.phone or phones.get(key)
    by_email = [k for k in merged if k.startswith("e:")]
    by_phone = [k for k in merged if k.startswith("p:")]
    ids: dict[str, uuid.UUID] = {}
    if by_email:
        found = await batch_sql.upsert_contacts_by_email(
            conn,
            [names[k] for k in by_email],
            [merged[k].submission.email or "" for k in by_email],
            [phones[k] for k in by_email],
            [email_key(pepper, k[2:]) for k in by_email],
            [phone_key(pepper, p) if (p := phones[k]) else None for k in by_email],
            [seen[k] for k in by_email],
        )
        ids.update({f"e:{key}": contact_id for key, contact_id in found.items()})
    if by_phone:
        found = await batch_sql.upsert_contacts_by_phone(
            conn,
            [names[k] for k in by_phone],
            [k[2:] for k in by_phone],
            [phone_key(pepper, k[2:]) for k in by_phone],
            [seen[k] for k in by_phone],
        )
        ids.update({f"p:{phone}": contact_id for phone, contact_id in found.items()})
    return ids


async def _insert_rows(
    conn: repository.Conn,
    envelopes: list[Envelope],
    new: list[int],
    ids: list[uuid.UUID],
    contacts: dict[str, uuid.UUID],
) -> None:
    rows = [(ids[i], contacts[_contact_key(envelopes[i])], envelopes[i]) for i in new]
    texts = {t.consent_id: t for _, _, env in rows for t in env.new_texts}
    if texts:  # before the events that refer to them
        await repository.ensure_consent_texts(conn, list(texts.values()))
    purposes = [(sid, p) for sid, _, env in rows for p in env.purposes]
    events = [(sid, cid, env, d) for sid, cid, env in rows for d in env.consents]
    await batch_sql.insert_rows(
        conn,
        batch_sql.BatchRows(
            submission_ids=[sid for sid, _, _ in rows],
            contact_ids=[cid for _, cid, _ in rows],
            sources=[env.source for _, _, env in rows],
            channels=[env.channel for _, _, env in rows],
            messages=[env.submission.message for _, _, env in rows],
            notice_versions=[env.notice_version for _, _, env in rows],
            received=[env.received_at for _, _, env in rows],
            purpose_submission_ids=[sid for sid, _ in purposes],
            purposes=[p.purpose for _, p in purposes],
            bases=[p.lawful_basis for _, p in purposes],
            days=[p.retention_days for _, p in purposes],
            event_contact_ids=[cid for _, cid, _, _ in events],
            event_submission_ids=[sid for sid, _, _, _ in events],
            event_consent_ids=[d.consent.consent_id for _, _, _, d in events],
            event_purposes=[d.consent.purpose for _, _, _, d in events],
            event_granted=[d.granted for _, _, _, d in events],
            event_text_hashes=[d.consent.text_sha256 for _, _, _, d in events],
            event_sources=[env.source for _, _, env, _ in events],
            event_notice_versions=[env.notice_version for _, _, env, _ in events],
            event_recorded=[env.received_at for _, _, env, _ in events],
        ),
    )


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
                if len(envelopes) == 1:
                    return [await write_envelope(conn, envelopes[0], uuid.uuid4(), self.pepper)]
                return await write_batch(conn, envelopes, self.pepper)
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
