"""The one write path: one or many submissions, set-based, inside the caller's transaction.

A request committed on its own, a group-commit batch and a chat that has just
become a submission all go through `write_submissions`; a single submission is a
batch of one. Who each submission is about is decided in store/contacts.py; which
deliveries are repeats, in store/deliveries.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ingest.domain import ConsentDecision, Envelope, Outcome
from ingest.store import ledger
from ingest.store.connection import Conn
from ingest.store.consent_texts import ensure_consent_texts
from ingest.store.contacts import ContactUpdate, contact_key, upsert_contacts
from ingest.store.deliveries import claim_deliveries
from ingest.store.mail_queue import queue_mail
from ingest.store.notices import insert_notices


@dataclass(slots=True)
class _Plan:
    """The batch after de-duplication: which items are new, which repeat an earlier one."""

    ids: list[uuid.UUID]
    repeats: dict[int, int] = field(default_factory=dict)  # index -> index of its first occurrence
    firsts: list[int] = field(default_factory=list)


async def write_submissions(conn: Conn, envelopes: Sequence[Envelope], chain_key: bytes) -> list[Outcome]:
    """Every statement of one or many submissions, in the caller's transaction; outcomes in order.

    Repeated delivery ids (in the batch or seen before) resolve to the first submission.
    The envelopes carry their keyed hashes; `chain_key` seals the consent events (ledger.py).
    """
    plan = _plan(envelopes)
    outcomes: list[Outcome | None] = [None] * len(envelopes)
    digests = {i: d for i in plan.firsts if (d := envelopes[i].delivery_digest) is not None}
    keyed = list(digests)
    seen = await claim_deliveries(
        conn,
        [envelopes[i].source for i in keyed],
        [digests[i] for i in keyed],
        [plan.ids[i] for i in keyed],
    )
    new = []
    for i in plan.firsts:
        env = envelopes[i]
        earlier = seen.get((env.source, digests[i])) if i in digests else None
        if earlier is not None:
            outcomes[i] = Outcome("duplicate", submission_id=earlier)
        else:
            new.append(i)
    if new:
        contacts, updates = await upsert_contacts(conn, [envelopes[i] for i in new])
        # Takes the feed lock.
        await _insert_rows(conn, envelopes, new, plan.ids, contacts, updates, chain_key)
        await queue_mail(conn, envelopes, new, plan.ids, contacts)
        shown = [(i, n) for i in new for n in envelopes[i].notices]
        await insert_notices(
            conn, [(plan.ids[i], n) for i, n in shown], [envelopes[i].received_at for i, _ in shown]
        )
        for i in new:
            outcomes[i] = Outcome("created", submission_id=plan.ids[i])
    for i, first in plan.repeats.items():
        first_outcome = outcomes[first]
        assert first_outcome is not None  # noqa: S101 - firsts are all decided above
        outcomes[i] = Outcome("duplicate", submission_id=first_outcome.submission_id)
    return [o for o in outcomes if o is not None]


def _plan(envelopes: Sequence[Envelope]) -> _Plan:
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


async def _insert_rows(
    conn: Conn,
    envelopes: Sequence[Envelope],
    new: list[int],
    ids: list[uuid.UUID],
    contacts: dict[str, uuid.UUID],
    updates: list[ContactUpdate],
    chain_key: bytes,
) -> None:
    rows = [(ids[i], contacts[contact_key(envelopes[i])], envelopes[i]) for i in new]
    texts = {t.consent_id: t for _, _, env in rows for t in env.new_texts}
    if texts:  # before the events that refer to them
        await ensure_consent_texts(conn, list(texts.values()))
    purposes = [(sid, p) for sid, _, env in rows for p in env.purposes]
    events = [(sid, cid, env, d) for sid, cid, env in rows for d in env.consents]
    chain = await _chain_events(conn, chain_key, events)
    await insert_rows(
        conn,
        BatchRows(
            submission_ids=[sid for sid, _, _ in rows],
            contact_ids=[cid for _, cid, _ in rows],
            sources=[env.source for _, _, env in rows],
            channels=[env.channel for _, _, env in rows],
            messages=[env.submission.message for _, _, env in rows],
            notice_versions=[env.notice_version for _, _, env in rows],
            received=[env.received_at for _, _, env in rows],
            names=[env.submission.name for _, _, env in rows],
            emails=[env.submission.email for _, _, env in rows],
            phones=[env.submission.phone for _, _, env in rows],
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
            chain=chain,
            update_contact_ids=[u.contact_id for u in updates],
            update_names=[u.name for u in updates],
            update_phones=[u.phone for u in updates],
            update_phone_hashes=[u.phone_hash for u in updates],
        ),
    )


async def _chain_events(
    conn: Conn, key: bytes, events: list[tuple[uuid.UUID, uuid.UUID, Envelope, ConsentDecision]]
) -> ledger.Sealed | None:
    """Take the feed lock and the consent chain's head, and chain the batch's consent events."""
    if not events:
        return None  # insert_rows takes the feed lock
    opened = await ledger.open_chain(conn, "consent_events", len(events), after_feed_lock=True)
    return ledger.seal(
        key,
        opened,
        [
            ledger.consent_event_fields(
                event_id,
                d.consent.consent_id,
                d.consent.purpose,
                d.granted,
                d.consent.text_sha256,
                env.source,
                env.notice_version,
                env.received_at,
            )
            for event_id, (_, _, env, d) in zip(opened.ids, events, strict=True)
        ],
    )


@dataclass(frozen=True, slots=True)
class BatchRows:
    """The rows of a batch's new submissions, as column arrays (one entry per row)."""

    submission_ids: Sequence[uuid.UUID]
    contact_ids: Sequence[uuid.UUID]
    sources: Sequence[str]
    channels: Sequence[str]
    messages: Sequence[str | None]
    notice_versions: Sequence[str]
    received: Sequence[datetime]
    names: Sequence[str | None]
    emails: Sequence[str | None]
    phones: Sequence[str | None]
    # submission_purposes rows
    purpose_submission_ids: Sequence[uuid.UUID]
    purposes: Sequence[str]
    bases: Sequence[str]
    days: Sequence[int]
    # consent_events rows, in order, and their chain columns (ledger.seal), None without events
    event_contact_ids: Sequence[uuid.UUID]
    event_submission_ids: Sequence[uuid.UUID]
    event_consent_ids: Sequence[str]
    event_purposes: Sequence[str]
    event_granted: Sequence[bool]
    event_text_hashes: Sequence[str]
    event_sources: Sequence[str]
    event_notice_versions: Sequence[str]
    event_recorded: Sequence[datetime]
    chain: ledger.Sealed | None
    # what authenticated submissions change on known contacts
    update_contact_ids: Sequence[uuid.UUID]
    update_names: Sequence[str | None]
    update_phones: Sequence[str | None]
    update_phone_hashes: Sequence[bytes | None]


# One statement, one round trip: update what authenticated sources said about known
# contacts (their rows are already locked by the upsert), take the feed lock (held to
# COMMIT, so seq values become visible in order), insert the submissions in batch
# order, their purposes and consent events (ids, positions and HMACs drawn and computed
# beforehand under the chain head's lock, ledger.py) with the chain's new head, and
# queue one crm_submission notification per submission. Data-modifying CTEs always run
# to completion; foreign keys are checked at the end of the statement, when the
# submissions are in.
_INSERT_ROWS = """
WITH contact_updates AS (
    UPDATE ingest.contacts c
       SET name = COALESCE(u.n, c.name),
           phone = COALESCE(u.p, c.phone),
           phone_hash = COALESCE(u.ph, c.phone_hash)
      FROM unnest($24::uuid[], $25::text[], $26::text[], $27::bytea[]) AS u(id, n, p, ph)
     WHERE c.contact_id = u.id
), feed_lock AS MATERIALIZED (
    SELECT id FROM ingest.feed_lock FOR UPDATE
), subs AS (
    INSERT INTO ingest.submissions
           (submission_id, contact_id, source, channel, message, notice_version, received_at,
            name, email, phone)
    SELECT i, c, s, ch, m, n, r, nm, em, ph
      FROM feed_lock,
           unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::timestamptz[], $21::text[], $22::text[], $23::text[])
           WITH ORDINALITY AS t(i, c, s, ch, m, n, r, nm, em, ph, o)
     ORDER BY o
    RETURNING submission_id
), purposes AS (
    INSERT INTO ingest.submission_purposes (submission_id, purpose, lawful_basis, retention_days)
    SELECT * FROM unnest($8::uuid[], $9::text[], $10::text[], $11::int[])
), events AS (
    INSERT INTO ingest.consent_events
           (event_id, contact_id, submission_id, consent_id, purpose, granted, text_sha256, source,
            notice_version, recorded_at, chain_pos, prev_hash, row_hash)
    OVERRIDING SYSTEM VALUE
    SELECT i, c, s, k, p, g, h, src, n, r, pos, prev, rh
      FROM unnest($28::bigint[], $12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::bool[],
                  $17::text[], $18::text[], $19::text[], $20::timestamptz[], $29::bigint[], $30::text[],
                  $31::text[])
           AS t(i, c, s, k, p, g, h, src, n, r, pos, prev, rh)
), chain_head AS (
    UPDATE ingest.chain_heads SET position = $32, head = $33, head_mac = $34, updated_at = now()
     WHERE chain = 'consent_events' AND $32::bigint IS NOT NULL
), notified AS (
    SELECT pg_notify('crm_submission', submission_id::text) FROM subs
)
SELECT count(*) FROM notified
"""


async def insert_rows(conn: Conn, rows: BatchRows) -> None:
    """Write the batch's contact updates, submissions, purposes and consent events in one statement."""
    chain = rows.chain
    await conn.fetchval(
        _INSERT_ROWS,
        rows.submission_ids,
        rows.contact_ids,
        rows.sources,
        rows.channels,
        rows.messages,
        rows.notice_versions,
        rows.received,
        rows.purpose_submission_ids,
        rows.purposes,
        rows.bases,
        rows.days,
        rows.event_contact_ids,
        rows.event_submission_ids,
        rows.event_consent_ids,
        rows.event_purposes,
        rows.event_granted,
        rows.event_text_hashes,
        rows.event_sources,
        rows.event_notice_versions,
        rows.event_recorded,
        rows.names,
        rows.emails,
        rows.phones,
        rows.update_contact_ids,
        rows.update_names,
        rows.update_phones,
        rows.update_phone_hashes,
        chain.ids if chain else [],
        chain.positions if chain else [],
        chain.prev_hashes if chain else [],
        chain.row_hashes if chain else [],
        chain.head_position if chain else None,
        chain.head if chain else None,
        chain.head_mac if chain else None,
    )
