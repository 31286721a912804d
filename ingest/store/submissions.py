"""The one write path: one or many submissions, set-based, inside the caller's transaction.

A request committed on its own, a group-commit batch and a chat that has just
become a submission all go through `write_submissions`; a single submission is a
batch of one. The contact identity rules live here, and only here:

- A contact is keyed by the canonical e-mail key (`pseudonyms.canonical_email`), or,
  for a submission without an e-mail, by its phone number.
- A submission that gives only a phone joins only a contact known by that phone
  alone, never a contact keyed by an e-mail: a phone typed next to somebody's
  address proves nothing about who owns it.
- A source that authenticates its deliveries (a signed provider or partner) updates
  a known contact's name and phone, the newest winning. A browser form, which
  anybody can post, never changes them: what it said stays on its own submission
  (`submissions.name/email/phone`, `crm.submissions`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ingest.domain import ConsentDecision, Envelope, Outcome
from ingest.pseudonyms import canonical_email, delivery_digest, email_key, phone_key
from ingest.repository import Conn, ensure_consent_texts
from ingest.store import ledger
from ingest.store.notices import insert_notices


@dataclass(slots=True)
class _Plan:
    """The batch after de-duplication: which items are new, which repeat an earlier one."""

    ids: list[uuid.UUID]
    repeats: dict[int, int] = field(default_factory=dict)  # index -> index of its first occurrence
    firsts: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _ContactUpdate:
    """What authenticated submissions in the batch say about a known contact's name and phone."""

    contact_id: uuid.UUID
    name: str | None
    phone: str | None
    phone_hash: bytes | None


async def write_submissions(conn: Conn, envelopes: Sequence[Envelope], pepper: str) -> list[Outcome]:
    """Every statement of one or many submissions, in the caller's transaction; outcomes in order.

    Repeated delivery ids (in the batch or seen before) resolve to the first submission.
    """
    plan = _plan(envelopes)
    outcomes: list[Outcome | None] = [None] * len(envelopes)
    keyed = [i for i in plan.firsts if envelopes[i].delivery_id is not None]
    digests = {i: delivery_digest(pepper, envelopes[i].source, envelopes[i].delivery_id or "") for i in keyed}
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
        contacts, updates = await _upsert_contacts(conn, [envelopes[i] for i in new], pepper)
        await _insert_rows(conn, envelopes, new, plan.ids, contacts, updates, pepper)  # takes the feed lock
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


def contact_key(env: Envelope) -> str:
    """Which contact a submission belongs to: `e:<canonical e-mail>`, else `p:<E.164 phone>`."""
    data = env.submission
    return f"e:{canonical_email(data.email)}" if data.email else f"p:{data.phone}"


@dataclass(slots=True)
class _People:
    """The batch per person: who creates the contact, when last seen, what authenticated sources said."""

    first: dict[str, Envelope] = field(default_factory=dict)
    seen: dict[str, datetime] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # the newest name an authenticated source gave
    phones: dict[str, str] = field(default_factory=dict)


def _people(envelopes: list[Envelope]) -> _People:
    people = _People()
    for env in envelopes:
        key = contact_key(env)
        people.first.setdefault(key, env)
        people.seen[key] = max(people.seen.get(key, env.received_at), env.received_at)
        if env.authenticated:
            if env.submission.name:
                people.names[key] = env.submission.name
            if env.submission.phone and key.startswith("e:"):
                people.phones[key] = env.submission.phone
    return people


async def _upsert_contacts(
    conn: Conn, envelopes: list[Envelope], pepper: str
) -> tuple[dict[str, uuid.UUID], list[_ContactUpdate]]:
    """One row per person in the batch, found or created; and the updates authenticated sources make."""
    people = _people(envelopes)
    ids, created = await _find_or_create(conn, people, pepper)
    updates = []
    for key in people.names.keys() | people.phones.keys():
        name, phone = people.names.get(key), people.phones.get(key)
        made = people.first[key].submission
        if key in created and name in (None, made.name) and phone in (None, made.phone):
            continue  # the contact was just created with these very values
        updates.append(_ContactUpdate(ids[key], name, phone, phone_key(pepper, phone) if phone else None))
    return ids, updates


async def _find_or_create(conn: Conn, people: _People, pepper: str) -> tuple[dict[str, uuid.UUID], set[str]]:
    """Contact id per person key, and the keys whose contact this batch created."""
    first, seen = people.first, people.seen
    by_email = [k for k in first if k.startswith("e:")]
    by_phone = [k for k in first if k.startswith("p:")]
    found: list[tuple[str, uuid.UUID, bool]] = []
    if by_email:
        rows = await upsert_contacts_by_email(
            conn,
            [first[k].submission.name for k in by_email],
            [first[k].submission.email or "" for k in by_email],
            [k[2:] for k in by_email],
            [first[k].submission.phone for k in by_email],
            [email_key(pepper, k[2:]) for k in by_email],
            [phone_key(pepper, p) if (p := first[k].submission.phone) else None for k in by_email],
            [seen[k] for k in by_email],
        )
        found += [(f"e:{key}", contact_id, is_new) for key, contact_id, is_new in rows]
    if by_phone:
        rows = await upsert_contacts_by_phone(
            conn,
            [first[k].submission.name for k in by_phone],
            [k[2:] for k in by_phone],
            [phone_key(pepper, k[2:]) for k in by_phone],
            [seen[k] for k in by_phone],
        )
        found += [(f"p:{phone}", contact_id, is_new) for phone, contact_id, is_new in rows]
    return {key: contact_id for key, contact_id, _ in found}, {key for key, _, is_new in found if is_new}


async def _insert_rows(
    conn: Conn,
    envelopes: Sequence[Envelope],
    new: list[int],
    ids: list[uuid.UUID],
    contacts: dict[str, uuid.UUID],
    updates: list[_ContactUpdate],
    pepper: str,
) -> None:
    rows = [(ids[i], contacts[contact_key(envelopes[i])], envelopes[i]) for i in new]
    texts = {t.consent_id: t for _, _, env in rows for t in env.new_texts}
    if texts:  # before the events that refer to them
        await ensure_consent_texts(conn, list(texts.values()))
    purposes = [(sid, p) for sid, _, env in rows for p in env.purposes]
    events = [(sid, cid, env, d) for sid, cid, env in rows for d in env.consents]
    chain = await _chain_events(conn, ledger.chain_key(pepper), events)
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


async def claim_deliveries(
    conn: Conn, sources: Sequence[str], delivery_ids: Sequence[str], submission_ids: Sequence[uuid.UUID]
) -> dict[tuple[str, str], uuid.UUID]:
    """Claim delivery ids; return the ones seen before, with their first submission id.

    A concurrent transaction holding the same key makes this wait until it
    finishes: then ON CONFLICT sees its row, so a race resolves to one submission.

    A repeat's answer ("duplicate", a 2xx) must be as durable as a first one: its first
    COMMIT may have been cut off at the deadline while it waited for the synchronous
    standby (committed on the primary only). Locking the rows read (FOR KEY SHARE) writes
    WAL, so this transaction's COMMIT too waits until a standby holds everything up to
    it, the first commit included; without it, a read-only COMMIT returns at once.
    """
    if not sources:
        return {}
    claimed = await conn.fetch(
        """
        INSERT INTO ingest.deliveries (source, delivery_id, submission_id)
        SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[])
        ON CONFLICT (source, delivery_id) DO NOTHING
        RETURNING source, delivery_id
        """,
        sources,
        delivery_ids,
        submission_ids,
    )
    new = {(r["source"], r["delivery_id"]) for r in claimed}
    seen = [(s, d) for s, d in zip(sources, delivery_ids, strict=True) if (s, d) not in new]
    if not seen:
        return {}
    rows = await conn.fetch(
        """
        SELECT d.source, d.delivery_id, d.submission_id
          FROM ingest.deliveries d
          JOIN unnest($1::text[], $2::text[]) AS k(source, delivery_id) USING (source, delivery_id)
           FOR KEY SHARE OF d
        """,
        [s for s, _ in seen],
        [d for _, d in seen],
    )
    return {(r["source"], r["delivery_id"]): r["submission_id"] for r in rows}


async def upsert_contacts_by_email(
    conn: Conn,
    names: Sequence[str | None],
    emails: Sequence[str],
    keys: Sequence[str],
    phones: Sequence[str | None],
    email_hashes: Sequence[bytes],
    phone_hashes: Sequence[bytes | None],
    seen: Sequence[datetime],
) -> list[tuple[str, uuid.UUID, bool]]:
    """Find or create contacts by e-mail key; (key, contact id, created) each.

    A known contact keeps its name and phone here (authenticated updates come later,
    in `insert_rows`); only `last_seen_at` moves.
    """
    rows = await conn.fetch(
        """
        INSERT INTO ingest.contacts AS c
               (name, email, email_key, phone, email_hash, phone_hash, first_seen_at, last_seen_at)
        SELECT n, e, k, p, eh, ph, s, s
          FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[],
                      $7::timestamptz[]) AS t(n, e, k, p, eh, ph, s)
        ON CONFLICT (email_key) WHERE email_key IS NOT NULL DO UPDATE
           SET last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at)
        RETURNING email_key, contact_id, xmax = 0 AS created
        """,
        names,
        emails,
        keys,
        phones,
        email_hashes,
        phone_hashes,
        seen,
    )
    return [(r["email_key"], r["contact_id"], r["created"]) for r in rows]


async def upsert_contacts_by_phone(
    conn: Conn,
    names: Sequence[str | None],
    phones: Sequence[str],
    phone_hashes: Sequence[bytes],
    seen: Sequence[datetime],
) -> list[tuple[str, uuid.UUID, bool]]:
    """Find or create the phone-only contact of each phone; (phone, contact id, created) each."""
    rows = await conn.fetch(
        """
        INSERT INTO ingest.contacts AS c (name, phone, phone_hash, first_seen_at, last_seen_at)
        SELECT n, p, ph, s, s
          FROM unnest($1::text[], $2::text[], $3::bytea[], $4::timestamptz[]) AS t(n, p, ph, s)
        ON CONFLICT (phone) WHERE email IS NULL DO UPDATE
           SET last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at)
        RETURNING phone, contact_id, xmax = 0 AS created
        """,
        names,
        phones,
        phone_hashes,
        seen,
    )
    return [(r["phone"], r["contact_id"], r["created"]) for r in rows]


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


async def rekey_legacy_deliveries(conn: Conn, pepper: str, chunk: int = 1000) -> int:
    """Delivery ids stored in the clear (before migration 005) become keyed digests; run at start."""
    if not await conn.fetchval("SELECT to_regclass('ingest.deliveries') IS NOT NULL"):
        return 0  # not migrated yet: /readyz says so
    total = 0
    while True:
        rows = await conn.fetch(
            "SELECT source, delivery_id FROM ingest.deliveries WHERE delivery_id NOT LIKE 'k1:%' LIMIT $1",
            chunk,
        )
        if not rows:
            return total
        await conn.execute(
            """
            UPDATE ingest.deliveries d SET delivery_id = n.digest
              FROM unnest($1::text[], $2::text[], $3::text[]) AS n(source, old, digest)
             WHERE d.source = n.source AND d.delivery_id = n.old
            """,
            [r["source"] for r in rows],
            [r["delivery_id"] for r in rows],
            [delivery_digest(pepper, r["source"], r["delivery_id"]) for r in rows],
        )
        total += len(rows)
